import gzip
import time

import numpy as np
import pytest

from mnistxai import data
from mnistxai.data import DataError


def _write_split(folder, split="train", n=7, gz=True, naming="-"):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    prefix = {"train": "train", "test": "t10k"}[split]
    ext = ".gz" if gz else ""
    data.write_idx(folder / f"{prefix}-images{naming}idx3-ubyte{ext}", images)
    data.write_idx(folder / f"{prefix}-labels{naming}idx1-ubyte{ext}", labels)
    return images, labels


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("naming", ["-", "."])
def test_idx_round_trip_both_namings(tmp_path, gz, naming):
    images, labels = _write_split(tmp_path, "test", gz=gz, naming=naming)
    got_images, got_labels = data.load("mnist", "test", data_dir=tmp_path)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert got_images.dtype == np.uint8 and got_labels.dtype == np.int32


def _corrupt(tmp_path, how):
    _write_split(tmp_path, "train")
    path = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    if how == "truncated_payload":
        raw = raw[:-100]
    elif how == "extra_bytes":
        raw = raw + b"\0" * 5
    elif how == "bad_magic":
        raw = b"\x01" + raw[1:]
    elif how == "wrong_dtype":
        raw = raw[:2] + b"\x0d" + raw[3:]
    elif how == "wrong_ndim":
        raw = raw[:3] + b"\x02" + raw[4:]
    elif how == "truncated_header":
        raw = raw[:9]
    if how == "truncated_gzip":
        path.write_bytes(path.read_bytes()[:200])
    else:
        path.write_bytes(gzip.compress(raw))
    return path


@pytest.mark.parametrize(
    "how",
    [
        "truncated_payload",
        "extra_bytes",
        "bad_magic",
        "wrong_dtype",
        "wrong_ndim",
        "truncated_header",
        "truncated_gzip",
    ],
)
def test_corrupt_idx_is_a_clear_error_naming_the_file(tmp_path, how):
    path = _corrupt(tmp_path, how)
    with pytest.raises(DataError, match=path.name):
        data.load("mnist", "train", data_dir=tmp_path)


def test_image_and_label_counts_must_agree(tmp_path):
    _write_split(tmp_path, "train", n=7)
    data.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(6, np.uint8))
    with pytest.raises(DataError, match="7 images but .* 6 labels"):
        data.load("mnist", "train", data_dir=tmp_path)


def test_labels_out_of_range(tmp_path):
    _write_split(tmp_path, "train", n=3)
    data.write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.array([1, 12, 3], np.uint8))
    with pytest.raises(DataError, match="0..9"):
        data.load("mnist", "train", data_dir=tmp_path)


def test_missing_files_in_given_folder(tmp_path):
    _write_split(tmp_path, "train")
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte"):
        data.load("mnist", "test", data_dir=tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        data.load("mnist", "test", data_dir=tmp_path / "nope")


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown dataset"):
        data.load("cifar10")
    with pytest.raises(ValueError, match="unknown split"):
        data.load("mnist", "validation")


def test_env_var_is_used(tmp_path, monkeypatch):
    images, _ = _write_split(tmp_path, "test")
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    np.testing.assert_array_equal(data.load("mnist", "test")[0], images)


def test_env_var_folder_is_not_taken_for_fashion_mnist(tmp_path, monkeypatch):
    _write_split(tmp_path, "test")  # MNIST files at the top
    (tmp_path / "fashion_mnist").mkdir()
    fashion, _ = _write_split(tmp_path / "fashion_mnist", "test", n=4)
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    np.testing.assert_array_equal(data.load("fashion_mnist", "test")[0], fashion)


def test_offline_fails_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))  # empty folder
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))  # nothing prepared
    monkeypatch.setattr(data, "_host_reachable", lambda *a, **k: False)
    start = time.perf_counter()
    with pytest.raises(DataError) as err:
        data.load("mnist", "train")
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert (
        data.ENV_VAR in message
        and "--data-dir" in message
        and "train-images-idx3-ubyte.gz" in message
    )


def test_reachability_probe_gives_up_on_a_closed_port():
    import socket

    with socket.socket() as s:  # find a free local port, then close it: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    assert data._host_reachable(("127.0.0.1", port), timeout=2.0) is False
    assert time.perf_counter() - start < 3


def test_real_mnist(mnist_dir):
    train_images, train_labels = data.load("mnist", "train", data_dir=mnist_dir)
    test_images, test_labels = data.load("mnist", "test", data_dir=mnist_dir)
    assert train_images.shape == (60000, 28, 28) and test_images.shape == (10000, 28, 28)
    assert train_images.dtype == np.uint8 and train_labels.dtype == np.int32
    assert np.bincount(test_labels).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]
    x = data.to_model_input(test_images[:5])
    assert x.shape == (5, 28, 28, 1) and x.dtype == np.float32 and 0 <= x.min() and x.max() == 1.0
