"""The attribution methods, one file per method or small family, each registering itself
(``mnistxai.xai.registry.register``). Importing this package imports every module in it, so a
new method is one new file here and nothing else: ``explain``, the explanation runs, the
leaderboard, the demos and the contract tests all read the registry."""

import importlib
import pkgutil

import mnistxai.xai.views  # noqa: F401  (the standard model views, before any method)

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
