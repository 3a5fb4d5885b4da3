"""The synthetic demo corpus: VoxCeleb1's layout and list formats, reproducible from its seed."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import soundfile

from data_objects import voxceleb
from data_objects.synthetic import MAX_SECONDS, MIN_SECONDS, SAMPLE_RATE, CorpusPlan, generate_corpus, main

PLAN = CorpusPlan(seed=4, dev_speakers=2, test_speakers=2, videos=2, utterances=2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    data = tmp_path_factory.mktemp("synthetic") / "VoxCeleb1"
    assert generate_corpus(data, PLAN, workers=2) == 16
    return data


def file_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def wav_speakers(data: Path, subset: str) -> list[str]:
    return sorted(p.name for p in (data / subset / "wav").iterdir())


def test_same_seed_same_bytes_whatever_the_worker_count(corpus, tmp_path):
    generate_corpus(tmp_path / "again", PLAN, workers=1)
    again, first = file_bytes(tmp_path / "again"), file_bytes(corpus)
    assert len(first) == 16 + 3 and again == first
    other = CorpusPlan(5, PLAN.dev_speakers, PLAN.test_speakers, PLAN.videos, PLAN.utterances)
    generate_corpus(tmp_path / "other", other, workers=1)
    audio = {content for name, content in first.items() if name.endswith(".wav")}
    other_audio = {content for name, content in file_bytes(tmp_path / "other").items() if name.endswith(".wav")}
    assert len(audio) == len(other_audio) == 16 and not audio & other_audio


def test_layout_is_voxceleb1s(corpus):
    assert sorted(p.name for p in corpus.iterdir()) == sorted(["dev", "test", *(
        voxceleb.META_FILE, voxceleb.SPLIT_FILE, voxceleb.TRIALS_FILE)])
    assert voxceleb.missing_layout(corpus) == []
    dev, test = wav_speakers(corpus, "dev"), wav_speakers(corpus, "test")
    assert dev == ["id10001", "id10002"] and test == ["id10003", "id10004"]
    wavs = sorted((corpus / "dev" / "wav").rglob("*.wav")) + sorted((corpus / "test" / "wav").rglob("*.wav"))
    assert len(wavs) == 16
    for wav in wavs:
        assert re.fullmatch(r"id\d{5}/[A-Za-z0-9_-]{11}/\d{5}\.wav", "/".join(wav.parts[-3:])), wav
        info = soundfile.info(wav)
        assert (info.samplerate, info.channels, info.subtype) == (SAMPLE_RATE, 1, "PCM_16")
        assert MIN_SECONDS <= info.duration <= MAX_SECONDS


def test_lists_are_consistent_with_the_audio(corpus):
    meta = (corpus / voxceleb.META_FILE).read_text().splitlines()
    assert tuple(meta[0].split("\t")) == voxceleb.META_HEADER
    rows = [line.split("\t") for line in meta[1:]]
    assert {(row[0], row[4]) for row in rows} == {(s, "dev") for s in wav_speakers(corpus, "dev")} | {
        (s, "test") for s in wav_speakers(corpus, "test")}
    assert all(row[2] in ("m", "f") for row in rows)

    on_disk = {str(p.relative_to(corpus / subset / "wav")) for subset in voxceleb.SUBSETS
               for p in (corpus / subset / "wav").rglob("*.wav")}
    split = voxceleb.read_iden_split(corpus / voxceleb.SPLIT_FILE)
    assert sorted(utterance for _, utterance in split) == sorted(on_disk)
    for speaker in {u.split("/")[0] for u in on_disk}:
        partitions = {partition for partition, utterance in split if utterance.startswith(speaker + "/")}
        assert partitions == {"train", "val", "test"}, speaker

    trials = voxceleb.read_trials(corpus / voxceleb.TRIALS_FILE)
    test_utterances = {u for u in on_disk if u.split("/")[0] in wav_speakers(corpus, "test")}
    assert trials and {t.label for t in trials} == {0, 1}
    for trial in trials:
        assert {trial.first, trial.second} <= test_utterances and trial.first != trial.second
        assert trial.label == (trial.first.split("/")[0] == trial.second.split("/")[0])


def test_an_occupied_folder_is_refused_in_one_line(corpus, capsys):
    assert main([str(corpus)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "already holds" in error[0]
