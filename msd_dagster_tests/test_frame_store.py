"""The frame store: a write replaces a partition's frames as a whole, and concurrent writers
and readers of one partition never see a missing or mixed version."""

from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
import pytest

from msd_dagster.frame_store import FramesNotStored, FrameStore

ASSET = ["normalized", "songs"]


def frames(n: int) -> dict[str, pd.DataFrame]:
    return {
        "msd_track": pd.DataFrame({"track_id": [f"T{n}-{i}" for i in range(n)], "n": n}),
        "msd_artist": pd.DataFrame({"artist_id": [f"AR{n}"], "name": ["Björk 東京"]}),
    }


def versions(store: FrameStore) -> list[str]:
    return sorted(p.name for p in store.folder(ASSET, "A/B").iterdir() if p.is_dir())


def test_a_write_replaces_the_frames_and_keeps_only_the_version_it_replaced(
    tmp_path: Path,
) -> None:
    store = FrameStore(tmp_path)
    with pytest.raises(FramesNotStored, match="normalized/songs partition A/B"):
        store.read(ASSET, "A/B")
    first = store.write(ASSET, "A/B", frames(3))
    read = store.read(ASSET, "A/B")
    pd.testing.assert_frame_equal(read["msd_track"], frames(3)["msd_track"])
    assert read["msd_artist"]["name"].tolist() == ["Björk 東京"]
    assert store.read(ASSET, "A/B", ["msd_artist"]).keys() == {"msd_artist"}

    (store.folder(ASSET, "A/B") / "v-crashed").mkdir()  # a write that died before its pointer
    second = store.write(ASSET, "A/B", frames(5))
    assert versions(store) == sorted([first.name, second.name])
    assert store.read(ASSET, "A/B")["msd_track"]["n"].tolist() == [5] * 5
    third = store.write(ASSET, "A/B", frames(2))
    assert versions(store) == sorted([second.name, third.name])
    assert store.read(ASSET, "A/B")["msd_track"]["n"].tolist() == [2, 2]


def test_a_reader_that_read_the_pointer_before_a_write_still_finds_its_version(
    tmp_path: Path,
) -> None:
    store = FrameStore(tmp_path)
    store.write(ASSET, "A/B", frames(3))
    seen = store.current(ASSET, "A/B")
    store.write(ASSET, "A/B", frames(4))
    assert pd.read_parquet(seen / "msd_track.parquet")["n"].tolist() == [3, 3, 3]


def test_concurrent_writers_and_readers_of_one_partition(tmp_path: Path) -> None:
    store = FrameStore(tmp_path)
    store.write(ASSET, "A/B", frames(1))
    errors: list[BaseException] = []
    stop = threading.Event()

    def write(sizes: range) -> None:
        try:
            for n in sizes:
                store.write(ASSET, "A/B", frames(n))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    def read() -> None:
        try:
            while not stop.is_set():
                got = store.read(ASSET, "A/B")
                n = got["msd_track"]["n"].iloc[0]
                assert len(got["msd_track"]) == n and got["msd_artist"]["artist_id"][0] == f"AR{n}"
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    writers = [threading.Thread(target=write, args=(range(s, s + 40, 2),)) for s in (2, 3)]
    reader = threading.Thread(target=read)
    for thread in [*writers, reader]:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    reader.join()
    assert errors == []
    assert len(versions(store)) == 2
    assert store.read(ASSET, "A/B")["msd_track"]["n"].iloc[0] in (40, 41)
