"""Write-once and whole-object primitives on local disk and S3."""

from __future__ import annotations

import threading

import pytest

from pipeline.storage import (
    AlreadyExists,
    ObjectNotFound,
    filesystem,
    join,
    read_bytes,
    uri_of,
    write_atomic,
    write_exclusive,
)


def test_exclusive_create_has_one_winner(store: str) -> None:
    fs, root = filesystem(store)
    path = join(root, "dir", "object.bin")
    n = 8
    barrier = threading.Barrier(n)
    won: list[int] = []
    lost: list[int] = []

    def write(i: int) -> None:
        barrier.wait()
        try:
            write_exclusive(fs, path, f"writer {i}".encode() * 1000)
            won.append(i)
        except AlreadyExists:
            lost.append(i)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(lost) == n - 1
    assert read_bytes(uri_of(fs, path)) == f"writer {won[0]}".encode() * 1000
    with pytest.raises(AlreadyExists, match="already exists"):
        write_exclusive(fs, path, b"late")


def test_atomic_write_replaces_whole(store: str) -> None:
    fs, root = filesystem(store)
    path = join(root, "out", "photo.jpg")
    write_atomic(fs, path, b"first")
    write_atomic(fs, path, b"second")
    assert read_bytes(uri_of(fs, path)) == b"second"
    assert fs.ls(join(root, "out"), detail=False) == [path]  # no temporary left behind


def test_read_missing_object_names_it(store: str) -> None:
    uri = f"{store}/nothing/here.jpg"
    with pytest.raises(ObjectNotFound, match="nothing/here.jpg: no such object"):
        read_bytes(uri)


@pytest.mark.parametrize("exclusive", [True, False])
def test_the_longest_valid_names_can_be_written_locally(tmp_path, exclusive: bool) -> None:
    fs, root = filesystem(str(tmp_path))
    for length in (250, 255):  # NAME_MAX: a temporary name must not add to the target's
        path = join(root, "a" * (length - 4) + ".jpg")
        (write_exclusive if exclusive else write_atomic)(fs, path, b"photo")
        assert read_bytes(path) == b"photo"
    assert sorted(len(p.name) for p in tmp_path.iterdir()) == [250, 255]  # and no temporary left
