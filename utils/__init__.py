from utils.genotype import Genotype

__all__ = ["Genotype"]
