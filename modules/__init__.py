"""LightningModules, one file per lesson. Every public class of a file here is registered when the package
is imported (``core.registry``): the command finds a lesson's module by its class name, with no list to
keep. A file whose name starts with ``_`` is a private helper and is imported only by whoever needs it."""

from core.registry import register_package

__all__ = register_package(__name__, __path__, globals())
