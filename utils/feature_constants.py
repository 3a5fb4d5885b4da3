"""The facts of the paper's feature (SPEC §2), in one place below both its numpy form (data_objects/audio.py)
and its torch front-ends (models/frontends.py)."""

SAMPLE_RATE = 16_000
N_FFT = 512
HOP_LENGTH = 160
WIN_LENGTH = 400
N_BINS = N_FFT // 2 + 1
TARGET_DBFS = -30.0
