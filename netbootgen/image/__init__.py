"""Real root images: a Debian 12 root made with mmdebstrap (recipe.py says what goes in, debian.py runs it),
written into an ext4 or xfs image without mounting (fs.py), cached by its inputs (build.py); inspect.py reads
an image back without mounting (clean file system, files written by the guest)."""
