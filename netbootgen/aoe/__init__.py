"""User-mode ATA over Ethernet (AoE) target.

- `protocol`: wire-format constants, frame builders/parsers, the IDENTIFY page.
- `target`: `ExportSpec`/`parse_export_spec`, `Export` (an open sector window) and `Target`
  (request -> reply frames; `Target.handle(frame) -> list[bytes]`, `Target.announce()`).
- `transport`: `parse_transport`/`open_transport` for ``unix-dgram:BIND:PEER``,
  ``unix-stream:PATH`` and ``iface:NAME``, and `Server`, the selectors loop around them.
- `command`: the click command `serve_command` (``netbootgen serve``), with `--export` specs or an
  inventory server (`inventory_plan`: its exports, each allowing the MACs of the machines booting from it).
- `client`: a minimal initiator over the unix transports, for tests and benchmarks.
- `guest`: a busybox + aoe initramfs and QEMU command line, for the integration tests and the benchmark.
"""
