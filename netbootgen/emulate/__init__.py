"""Emulation: QEMU command lines, the console follower, root images and the boot test."""
