"""The official Keras weight files: :class:`KerasFile` (cache file name, URL,
published MD5 or SHA-256, size in bytes where it is known) and the table
:data:`KERAS_FILES` of every application's files, named, located and hashed
exactly as Keras 3 (3.15.1, ``keras/src/applications/*.py``) does it.
Checking and downloading them: :mod:`jaxconvviz.models.weights.download`."""

from __future__ import annotations

import dataclasses

__all__ = ["APPLICATION_NAMES", "BASE_URL", "IMAGENET_FILES", "KERAS_FILES",
           "URL_ENV", "KerasFile"]


@dataclasses.dataclass(frozen=True)
class KerasFile:
    """An official Keras weights file.

    Attributes:
      fname: the cache file name (``get_file``'s ``fname``).
      md5: the published MD5 (32 hex digits), or None.
      size: the file size in bytes where it is known (public download logs of
        the official URL), else None (then only the server's Content-Length
        is checked).
      url: the official URL; None means :data:`BASE_URL` + ``fname`` (VGG16).
      sha256: the published SHA-256 (64 hex digits; ConvNeXt), or None.
    """

    fname: str
    md5: str | None
    size: int | None
    url: str | None = None
    sha256: str | None = None

    @property
    def digest(self) -> tuple[str, str] | None:
        """``(algorithm, hex digest)`` Keras checks the file against, or None
        where Keras publishes no hash (MobileNetV2)."""
        if self.sha256:
            return "sha256", self.sha256
        if self.md5:
            return "md5", self.md5
        return None

    def describe_size(self) -> str:
        """``"94,765,736 bytes (90.4 MiB)"``, or ``"size unknown"``."""
        if self.size is None:
            return "size not published"
        return f"{self.size:,} bytes ({self.size / 2**20:.1f} MiB)"


#: Where the VGG16 files are downloaded from (file name appended).
BASE_URL = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
#: Environment variable replacing the directory of every official URL.
URL_ENV = "JAXCONVVIZ_WEIGHTS_URL"

#: The Keras 3 ``keras.applications.vgg16`` files (``vgg16.py`` WEIGHTS_PATH*,
#: ``file_hash`` MD5s), keyed by ``include_top``. Tests may patch this dict.
IMAGENET_FILES: dict[bool, KerasFile] = {
    False: KerasFile("vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
                     "6d6bbae143d832006294945121d1f1fc", 58_889_256),
    True: KerasFile("vgg16_weights_tf_dim_ordering_tf_kernels.h5",
                    "64373286793e3c8b2b4e3219cbf3544b", 553_467_096),
}

_GCS = "https://storage.googleapis.com/tensorflow/keras-applications/"


def _pair(top: KerasFile, notop: KerasFile) -> dict[bool, KerasFile]:
    return {True: top, False: notop}


def _kf(url: str, digest: str | None, size: int | None) -> KerasFile:
    name = url.rsplit("/", 1)[1]
    if digest is not None and len(digest) == 64:
        return KerasFile(name, None, size, url, digest)
    return KerasFile(name, digest, size, url)


#: Official files of every application, ``{name: {include_top: KerasFile}}``.
#: URLs and hashes: Keras 3.15.1 ``keras/src/applications/*.py``
#: (``WEIGHTS_PATH*``, ``BASE_WEIGHT*_PATH``, ``WEIGHTS_HASHES``, the
#: ``file_hash`` arguments); sizes: public Keras download logs of those URLs
#: (``N/N`` progress lines), None where none was found.
KERAS_FILES: dict[str, dict[bool, KerasFile]] = {
    "resnet50": _pair(
        _kf(_GCS + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels.h5",
            "2cb95161c43110f7111970584f804107", 102_967_424),
        _kf(_GCS + "resnet/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "4d473c1dd8becc155b73f8504c6f6626", 94_765_736)),
    "resnet50v2": _pair(
        _kf(_GCS + "resnet/resnet50v2_weights_tf_dim_ordering_tf_kernels.h5",
            "3ef43a0b657b3be2300d5770ece849e0", None),
        _kf(_GCS + "resnet/resnet50v2_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "fac2f116257151a9d068a22e544a4917", 94_668_760)),
    "mobilenet_v2": _pair(  # Keras publishes no hash for these two
        _kf(_GCS + "mobilenet_v2/"
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
            None, 14_536_120),
        _kf(_GCS + "mobilenet_v2/"
            "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
            None, 9_406_464)),
    "mobilenet_v3_small": _pair(
        _kf(_GCS + "mobilenet_v3/weights_mobilenet_v3_small_224_1.0_float.h5",
            "8768d4c2e7dee89b9d02b2d03d65d862", None),
        _kf(_GCS + "mobilenet_v3/"
            "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
            "d3e8ec802a04aa4fc771ee12a9a9b836", 4_334_752)),
    "efficientnet_b0": _pair(
        _kf("https://storage.googleapis.com/keras-applications/efficientnetb0.h5",
            "902e53a9f72be733fc0bcb005b3ebbac", None),
        _kf("https://storage.googleapis.com/keras-applications/"
            "efficientnetb0_notop.h5",
            "50bc09e76180e00e4465e1a485ddc09d", 16_705_208)),
    "densenet121": _pair(
        _kf(_GCS + "densenet/densenet121_weights_tf_dim_ordering_tf_kernels.h5",
            "9d60b8095a5708f2dcce2bca79d332c7", None),
        _kf(_GCS + "densenet/"
            "densenet121_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "30ee3e1110167f948a6b9946edeeb738", 29_084_464)),
    "xception": _pair(
        _kf(_GCS + "xception/xception_weights_tf_dim_ordering_tf_kernels.h5",
            "0a58e3b7378bc2990ea3b43d5981f1f6", 91_884_032),
        _kf(_GCS + "xception/xception_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "b0042744bf5b25fce3cb969f33bebb97", 83_683_744)),
    "inception_v3": _pair(
        _kf(_GCS + "inception_v3/"
            "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
            "9a0d58056eeedaa3f26cb7ebd46da564", 96_112_376),
        _kf(_GCS + "inception_v3/"
            "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "bcbd6486424b2319ff4ef7d526e38f63", 87_910_968)),
    "vgg16": IMAGENET_FILES,
    "vgg19": _pair(
        _kf(_GCS + "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels.h5",
            "cbe5617147190e668d6c5d5026f83318", 574_710_816),
        _kf(_GCS + "vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
            "253f8cb515780f3b799900260a226db6", 80_134_624)),
    "convnext_tiny": _pair(
        _kf(_GCS + "convnext/convnext_tiny.h5",
            "8ae6e78ce2933352b1ef4008e6dd2f17bc40771563877d156bc6426c7cf503ff",
            None),
        _kf(_GCS + "convnext/convnext_tiny_notop.h5",
            "d547c096cabd03329d7be5562c5e14798aa39ed24b474157cef5e85ab9e49ef1",
            111_650_432)),
}
#: Application names, in the order of the docs.
APPLICATION_NAMES: tuple[str, ...] = tuple(KERAS_FILES)
