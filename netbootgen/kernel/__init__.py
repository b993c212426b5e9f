"""Kernels: fetching Debian's kernel package and generating config fragments."""
