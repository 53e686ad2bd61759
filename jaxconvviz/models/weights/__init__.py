"""Weight files: every Keras layout, the converted store, official downloads.

Split by concern:

- :mod:`~jaxconvviz.models.weights.keras_files` -- reading Keras ``.h5`` /
  ``.weights.h5`` / ``.keras`` weights (:func:`read_keras_weights`);
- :mod:`~jaxconvviz.models.weights.store` -- the converted ``.npz`` store,
  sidecars, :func:`load_params`, :func:`convert`, :func:`list_store`;
- :mod:`~jaxconvviz.models.weights.files` -- the official Keras files
  (:class:`KerasFile`, :data:`KERAS_FILES`);
- :mod:`~jaxconvviz.models.weights.download` -- size- then hash-checked
  atomic downloads of them, Keras cache reuse,
  :func:`missing_weights_message`;
- :mod:`~jaxconvviz.models.weights.limits` -- the bounds every file is
  checked against before it is read (:data:`MAX_WEIGHT_BYTES`,
  :func:`read_zip_member`);
- :mod:`~jaxconvviz.models.weights.vgg16` -- :func:`load_vgg16`
  (``"imagenet"``, ``"hed"`` or a path).

Every public name of those modules is importable from here. h5py is imported
only inside the functions that read HDF5. Nothing reaches the network unless
a fetch is asked for; the only output is the download progress bar (tqdm,
stderr).
"""

from jaxconvviz.models.weights.download import (
    DownloadError,
    application_available,
    application_file,
    application_weights_path,
    check_application,
    check_file,
    converted_imagenet_path,
    did_you_mean,
    download_file,
    fetch_application,
    fetch_command,
    fetch_imagenet,
    file_matches,
    imagenet_available,
    imagenet_path,
    imagenet_url,
    keras_cache_dirs,
    missing_weights_message,
    official_url,
)
from jaxconvviz.models.weights.files import (
    APPLICATION_NAMES,
    BASE_URL,
    IMAGENET_FILES,
    KERAS_FILES,
    URL_ENV,
    KerasFile,
)
from jaxconvviz.models.weights.keras_files import (
    ACCEPTED_FILES,
    HDF5_SIGNATURE,
    ZIP_SIGNATURE,
    check_weights_path,
    file_signature,
    is_keras_zip,
    natural_key,
    read_keras_weights,
    source_label,
)
from jaxconvviz.models.weights.limits import (
    MAX_BYTES_ENV,
    MAX_WEIGHT_BYTES,
    read_zip_member,
    weight_ceiling,
)
from jaxconvviz.models.weights.store import (
    CONVERTED_FORMAT,
    HOME_ENV,
    META_KEY,
    as_float32,
    assemble_params,
    clear_hash_cache,
    convert,
    expected_shapes,
    file_hash,
    file_params,
    guess_param_names,
    list_store,
    load_params,
    read_any,
    read_converted,
    read_sidecar,
    sidecar_path,
    store_dir,
    write_converted,
)
from jaxconvviz.models.weights.vgg16 import (
    HED_ENV,
    HED_INSTALL,
    VGG16_CONV,
    VGG16_SOURCES,
    VGG16_TOP,
    hed_weights_path,
    load_vgg16,
)

__all__ = [
    "APPLICATION_NAMES",
    "BASE_URL",
    "IMAGENET_FILES",
    "KERAS_FILES",
    "URL_ENV",
    "DownloadError",
    "KerasFile",
    "application_available",
    "application_file",
    "application_weights_path",
    "check_application",
    "check_file",
    "converted_imagenet_path",
    "did_you_mean",
    "download_file",
    "fetch_application",
    "fetch_command",
    "fetch_imagenet",
    "file_matches",
    "imagenet_available",
    "imagenet_path",
    "imagenet_url",
    "keras_cache_dirs",
    "missing_weights_message",
    "official_url",
    "ACCEPTED_FILES",
    "HDF5_SIGNATURE",
    "ZIP_SIGNATURE",
    "check_weights_path",
    "file_signature",
    "is_keras_zip",
    "natural_key",
    "read_keras_weights",
    "source_label",
    "CONVERTED_FORMAT",
    "HOME_ENV",
    "META_KEY",
    "as_float32",
    "assemble_params",
    "clear_hash_cache",
    "convert",
    "expected_shapes",
    "MAX_BYTES_ENV",
    "MAX_WEIGHT_BYTES",
    "read_zip_member",
    "weight_ceiling",
    "file_hash",
    "file_params",
    "guess_param_names",
    "list_store",
    "load_params",
    "read_any",
    "read_converted",
    "read_sidecar",
    "sidecar_path",
    "store_dir",
    "write_converted",
    "HED_ENV",
    "HED_INSTALL",
    "VGG16_CONV",
    "VGG16_SOURCES",
    "VGG16_TOP",
    "hed_weights_path",
    "load_vgg16",
]
