"""Test helpers shipped with the package: an AoE client, a busybox guest under QEMU."""
