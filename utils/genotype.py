"""The genotype record shared by the search, the trained network and the checkpoints."""
from collections import namedtuple

# Published checkpoints pickle this class as `utils.Genotype`; the module name keeps them loadable.
Genotype = namedtuple("Genotype", "normal normal_concat reduce reduce_concat", module="utils")
