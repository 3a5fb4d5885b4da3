"""Compute the VoxCeleb1 features: python data_preprocess.py DATA_DIR [--workers N] [--skip_existing] ..."""
import sys

from data_objects.preprocess import main

if __name__ == "__main__":
    sys.exit(main())
