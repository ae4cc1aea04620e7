"""``imagecorruptions`` (Michaelis et al. 2019, the benchmark authors' own code, 1.1.2 of 2020),
imported so that it runs on today's numpy / scipy / scikit-image / setuptools, unchanged.

Version 1.1.2 breaks on a current stack in four places, none of them in the corruptions' maths:

1. ``from pkg_resources import resource_filename`` at import: setuptools >= 81 has no
   ``pkg_resources``. While the module is imported, a stand-in module offering only
   ``resource_filename`` (the package's own frost images, beside its module file)
   is put in ``sys.modules`` and taken out again afterwards, so nothing else sees it.
2. ``from scipy.ndimage.interpolation import map_coordinates``: deprecated namespace (removed in
   SciPy 2.0). The same stand-in trick maps it to ``scipy.ndimage.map_coordinates`` if needed.
3. ``np.float_`` (fog's plasma fractal): gone in numpy 2. The module's ``np`` global is
   replaced by a proxy of numpy that adds ``float_ = float64``; numpy itself is not touched.
4. ``skimage.filters.gaussian(..., multichannel=True)`` (gaussian_blur, glass_blur): the
   keyword was removed in scikit-image 0.19; the module's ``gaussian`` becomes a wrapper that
   passes ``channel_axis=-1`` instead (the same filter).

One change is made on purpose, for determinism: impulse noise calls
``skimage.util.random_noise``, which on scikit-image >= 0.19 draws from a fresh
``np.random.default_rng()`` (OS entropy) instead of numpy's global generator, so it could not be
seeded. The module's ``sk`` is given a ``random_noise`` that passes an ``rng`` drawn from
numpy's global generator, which ``experiments.data.corrupted`` seeds per image. (1.1.2 on old
scikit-image reseeded the global generator from OS entropy there: not reproducible either.)
"""
from __future__ import annotations

import functools
import importlib
import os
import sys
import types

import numpy as np


class _NumpyWithFloat_(types.ModuleType):
    """numpy, plus the ``float_`` alias numpy 2 removed (float64)."""

    float_ = np.float64

    def __getattr__(self, name):
        return getattr(np, name)


def _resource_filename(module_name: str, resource: str) -> str:
    """pkg_resources' resource_filename: ``resource`` beside the file of module ``module_name``."""
    folder = os.path.dirname(sys.modules[module_name].__file__)
    return os.path.join(folder, os.path.normpath(resource))


def _gaussian_with_multichannel(gaussian):
    @functools.wraps(gaussian)
    def wrapper(image, *args, multichannel=None, **kwargs):
        if multichannel:
            kwargs.setdefault("channel_axis", -1)
        return gaussian(image, *args, **kwargs)
    return wrapper


def _seeded_random_noise(random_noise):
    @functools.wraps(random_noise)
    def wrapper(image, *args, **kwargs):
        if "rng" not in kwargs and "seed" not in kwargs:
            kwargs["rng"] = np.random.default_rng(np.random.randint(0, 2**32, dtype=np.uint64))
        return random_noise(image, *args, **kwargs)
    return wrapper


@functools.cache
def load_corruptions():
    """The ``imagecorruptions`` package, working on the installed numpy/scipy/scikit-image.

    Raises ImportError with the install command when it is missing."""
    stand_ins = {}
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        stand_ins["pkg_resources"] = types.ModuleType("pkg_resources")
        stand_ins["pkg_resources"].resource_filename = _resource_filename
    try:
        import scipy.ndimage.interpolation  # noqa: F401
    except ImportError:
        import scipy.ndimage

        stand_ins["scipy.ndimage.interpolation"] = types.ModuleType("scipy.ndimage.interpolation")
        stand_ins["scipy.ndimage.interpolation"].map_coordinates = scipy.ndimage.map_coordinates
    added = [name for name in stand_ins if name not in sys.modules]
    sys.modules.update({name: stand_ins[name] for name in added})
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            package = importlib.import_module("imagecorruptions")
    except ImportError as err:
        raise ImportError("the robustness stage needs the imagecorruptions package: "
                          "pip install imagecorruptions") from err
    finally:
        for name in added:
            sys.modules.pop(name, None)
    module = package.corruptions
    if not hasattr(np, "float_"):
        proxy = _NumpyWithFloat_("numpy")
        module.np = proxy
    module.gaussian = _gaussian_with_multichannel(module.gaussian)
    sk_proxy = types.SimpleNamespace(**{k: getattr(module.sk, k) for k in ("color", "util")})
    sk_proxy.util = types.SimpleNamespace(random_noise=_seeded_random_noise(module.sk.util.random_noise))
    module.sk = sk_proxy
    return package
