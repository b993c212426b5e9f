"""PXELINUX configuration: per-MAC menus and the fallback."""
