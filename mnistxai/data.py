"""MNIST and Fashion-MNIST as NumPy arrays, from local IDX files first and the network last.

``load(dataset, split, data_dir)`` looks in this order and uses the first source that has the data:

1. ``data_dir`` (the scripts' ``--data-dir``);
2. the ``MNISTXAI_DATA_DIR`` environment variable (MNIST in the folder itself or in ``mnist/``,
   Fashion-MNIST only in ``fashion_mnist/`` below it: IDX files do not say which dataset they hold);
3. for Fashion-MNIST, ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``);
4. a tensorflow-datasets copy already prepared on disk (``TFDS_DATA_DIR`` or
``~/tensorflow_datasets``);
5. a tensorflow-datasets download, tried only when the download host answers within seconds.

A local folder holds the four standard IDX files, gzipped or not, named either
``train-images-idx3-ubyte[.gz]`` or ``train-images.idx3-ubyte[.gz]`` (likewise ``train-labels``,
``t10k-images``, ``t10k-labels``). Every file is checked (magic number, dimensions, length): a
truncated or corrupt file raises ``DataError`` naming it, never returns garbage.
"""

from __future__ import annotations

import gzip
import os
import socket
import zlib
from pathlib import Path

import numpy as np
from mnistxai.util.errors import InputError

# mnist_shortcut: MNIST with a class-coded marker planted on every digit (``mnistxai.shortcut``)
DATASETS = ("mnist", "fashion_mnist", "mnist_shortcut")
CLASS_NAMES = {
    "mnist": tuple(str(d) for d in range(10)),
    "mnist_shortcut": tuple(str(d) for d in range(10)),
    "fashion_mnist": (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
}
SPLITS = ("train", "test")
ENV_VAR = "MNISTXAI_DATA_DIR"
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
_PREFIX = {"train": "train", "test": "t10k"}
_DOWNLOAD_HOST = ("storage.googleapis.com", 443)


class DataError(InputError):
    """Missing, unreadable or corrupt dataset files (the message says which and what to do)."""


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


MAX_IDX_BYTES = 1 << 30  # 1 GiB: MNIST's largest file is 47 MB


def read_idx(path: str | os.PathLike, expected_ndim: int | None = None) -> np.ndarray:
    """Read one IDX file (gzipped if it ends in ``.gz``) of unsigned bytes.

    Reads the header first and checks the magic number (0x00 0x00 0x08 ndim) and the dimensions
    (at most ``MAX_IDX_BYTES`` of data), then reads exactly that payload and checks that nothing
    follows it, so a damaged or hostile file (a small ``.gz`` that would inflate to gigabytes) is
    refused before its data is held in memory. Raises ``DataError`` naming the file otherwise.
    """
    path = Path(path)
    try:
        with _open(path) as f:
            head = f.read(4)
            if len(head) < 4 or head[0] != 0 or head[1] != 0:
                raise DataError(f"{path}: not an IDX file (bad magic number)")
            if head[2] != 0x08:
                raise DataError(
                    f"{path}: IDX data type 0x{head[2]:02x} is not unsigned byte (0x08)"
                )
            ndim = head[3]
            if expected_ndim is not None and ndim != expected_ndim:
                raise DataError(
                    f"{path}: expected {expected_ndim} dimensions, the header says {ndim}"
                )
            raw_dims = f.read(4 * ndim)
            if len(raw_dims) < 4 * ndim:
                raise DataError(f"{path}: truncated header")
            dims = tuple(int.from_bytes(raw_dims[4 * i : 4 * i + 4], "big") for i in range(ndim))
            size = int(np.prod(dims, dtype=object))  # exact: no int64 overflow
            if size > MAX_IDX_BYTES:
                raise DataError(
                    f"{path}: the header claims shape {dims} ({size:,} bytes), more than "
                    f"{MAX_IDX_BYTES:,}: not a dataset this project reads (corrupt file?)"
                )
            payload = f.read(size + 1)  # one byte more shows trailing data
    except PermissionError:
        raise DataError(f"cannot read {path}: permission denied") from None
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise DataError(f"cannot read {path}: {e} (corrupt or truncated file?)") from None
    if len(payload) != size:
        found = f"{len(payload):,}" if len(payload) <= size else "more"
        raise DataError(
            f"{path}: header promises {size} bytes of data for shape {dims}, "
            f"file has {found} (truncated or corrupt)"
        )
    return np.frombuffer(payload, np.uint8).reshape(dims)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file (gzipped if ``path`` ends in ``.gz``). For tests and
    tools."""
    path = Path(path)
    array = np.ascontiguousarray(array, np.uint8)
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


# mean pixel intensity (/255) of the training images: the one fingerprint IDX files carry
MEAN_INTENSITY = {"mnist": 0.1307, "fashion_mnist": 0.2860}


def check_dataset(images: np.ndarray, dataset: str, where: Path) -> None:
    """DataError when the images of ``where`` look like another dataset than ``dataset`` (their
    mean intensity is nearer the other's): IDX files cannot say which dataset they hold. Judged
    on 1,000 images or more (both datasets' splits have 10,000 or 60,000)."""
    if len(images) < 1000:
        return
    mean = float(images.mean()) / 255.0
    nearest = min(MEAN_INTENSITY, key=lambda d: abs(MEAN_INTENSITY[d] - mean))
    if nearest != dataset:
        raise DataError(
            f"{where} holds images of mean intensity {mean:.3f}, like {nearest} "
            f"({MEAN_INTENSITY[nearest]:.3f}), not {dataset} ({MEAN_INTENSITY[dataset]:.3f}): "
            f"point --data-dir at a folder of {dataset} files"
        )


def _find_file(folder: Path, prefix: str, kind: str) -> Path | None:
    ndim = 3 if kind == "images" else 1
    for sep in ("-", "."):
        for ext in (".gz", ""):
            candidate = folder / f"{prefix}-{kind}{sep}idx{ndim}-ubyte{ext}"
            if candidate.is_file():
                return candidate
    return None


def load_idx_folder(folder: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``(images, labels)`` from a folder of IDX files, or None if the folder lacks that split."""
    folder = Path(folder)
    prefix = _PREFIX[split]
    image_file = _find_file(folder, prefix, "images")
    label_file = _find_file(folder, prefix, "labels")
    if image_file is None or label_file is None:
        return None
    images = read_idx(image_file, expected_ndim=3)
    labels = read_idx(label_file, expected_ndim=1)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{image_file}: images are {images.shape[1:]}, expected 28x28")
    if len(images) != len(labels):
        raise DataError(
            f"{image_file} has {len(images)} images but {label_file} has {len(labels)} labels"
        )
    if labels.max(initial=0) > 9:
        raise DataError(f"{label_file}: labels must be 0..9, found {labels.max()}")
    return images, labels.astype(np.int32)


def _env_folders(dataset: str) -> list[Path]:
    """Folders that ``$MNISTXAI_DATA_DIR`` offers for ``dataset``.

    IDX files do not say which dataset they hold, so the variable's folder itself serves MNIST
    only; either dataset may also sit in a subfolder named after it (``mnist/``,
    ``fashion_mnist/``).
    """
    root = os.environ.get(ENV_VAR)
    if not root:
        return []
    root = Path(root)
    return [root / dataset] + ([root] if dataset == "mnist" else [])


def _tfds_data_dir() -> Path:
    return Path(os.environ.get("TFDS_DATA_DIR", Path.home() / "tensorflow_datasets"))


def _tfds_prepared(dataset: str) -> bool:
    return any((_tfds_data_dir() / dataset).glob("*/dataset_info.json"))


def _host_reachable(host_port=_DOWNLOAD_HOST, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection(host_port, timeout=timeout):
            return True
    except OSError:
        return False


def _load_tfds(dataset: str, split: str, download: bool) -> tuple[np.ndarray, np.ndarray]:
    """Read (and if ``download``, first fetch) a dataset through tensorflow-datasets, without
    TensorFlow."""
    import tensorflow_datasets as tfds  # slow import; only on this path

    builder = tfds.builder(dataset, data_dir=str(_tfds_data_dir()), file_format="array_record")
    if download:
        builder.download_and_prepare()
    source = builder.as_data_source(split=split)
    examples = [source[i] for i in range(len(source))]
    images = np.stack([np.asarray(e["image"], np.uint8).reshape(28, 28) for e in examples])
    labels = np.asarray([e["label"] for e in examples], np.int32)
    return images, labels


def _missing_message(dataset: str, split: str, looked: list[str]) -> str:
    prefix = _PREFIX[split]
    root = os.environ.get(ENV_VAR)
    env_note = (
        f" ${ENV_VAR} is set, but {dataset} is looked for in its subfolder "
        f"{Path(root) / dataset}/ (IDX files cannot say which dataset they hold)."
        if root and dataset != "mnist"
        else ""
    )
    return (
        f"{dataset} ({split}) not found (looked in: {', '.join(looked) or 'nowhere'}) and the "
        f"download host is unreachable. Put {prefix}-images-idx3-ubyte.gz and "
        f"{prefix}-labels-idx1-ubyte.gz in a folder and pass --data-dir FOLDER or set "
        f"{ENV_VAR}=FOLDER"
        + (" (or: apt-get install dataset-fashion-mnist)" if dataset == "fashion_mnist" else "")
        + env_note
    )


def load(
    dataset: str = "mnist",
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Load a dataset split as ``(images uint8 (N, 28, 28), labels int32 (N,))``.

    Args:
      dataset: ``"mnist"``, ``"fashion_mnist"`` or ``"mnist_shortcut"`` (MNIST, found as above,
        with the marker of its class on every digit: ``mnistxai.shortcut.make``).
      split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
      data_dir: a folder of IDX files; when given it is the only local folder consulted.
      download: allow the tensorflow-datasets download as a last resort (only when the host
      answers).
    """
    if dataset not in DATASETS:
        raise InputError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if dataset == "mnist_shortcut":
        from mnistxai import shortcut  # it needs JAX's random streams; plain loads do not

        marked = shortcut.make(*load("mnist", split, data_dir, download), split)
        return marked.images, marked.labels
    if data_dir is not None:
        folders = [Path(data_dir)]
    else:
        folders = _env_folders(dataset)
        if dataset == "fashion_mnist":
            folders.append(DEBIAN_FASHION_DIR)
    for folder in folders:
        if data_dir is not None and not folder.is_dir():
            raise DataError(
                f"data folder {folder} does not exist (without --data-dir the loader looks in "
                f"${ENV_VAR} and then downloads {dataset} through tensorflow-datasets)"
            )
        found = load_idx_folder(folder, split) if folder.is_dir() else None
        if found is not None:
            check_dataset(found[0], dataset, folder)
            return found
    if data_dir is not None:
        raise DataError(
            f"no {split} IDX files for {dataset} in {data_dir} "
            f"(expected {_PREFIX[split]}-images-idx3-ubyte[.gz] and "
            f"{_PREFIX[split]}-labels-idx1-ubyte[.gz])"
        )
    looked = [str(f) for f in folders]
    if _tfds_prepared(dataset):
        return _load_tfds(dataset, split, download=False)
    looked.append(str(_tfds_data_dir()))
    if download and _host_reachable():
        return _load_tfds(dataset, split, download=True)
    raise DataError(_missing_message(dataset, split, looked))


def to_model_input(images):
    """uint8 (N, 28, 28) in 0..255 -> float32 (N, 28, 28, 1) in [0, 1]: the project's one
    conversion, for NumPy arrays and for JAX arrays inside jitted steps alike."""
    images = images if hasattr(images, "astype") else np.asarray(images)
    return images.astype(np.float32)[..., None] / 255.0
