"""User-mode ATA over Ethernet (AoE) target.

Modules, each importing only those above it:

- `protocol`: wire-format constants, frame builders/parsers, the IDENTIFY page.
- `store`: `ExportSpec`/`parse_export_spec` and `OpenExport`, an open file or block device restricted to a
  sector window, with that export's protocol state (config string, MAC mask list, reservations) and counters.
- `target`: `Target`, the protocol engine over a set of `OpenExport`s (request -> reply frames;
  `Target.feed(frame, send)`, `Target.handle(frame) -> list[bytes]`, `Target.announce()`).
- `fastpath`: the link to the optional C hot path (`_fastpath.c`), which answers READ/WRITE for a `Target`.
- `address`: transport addresses and `parse_transport` for ``unix-dgram:BIND:PEER``, ``unix-stream:PATH``
  and ``iface:NAME``.
- `transport`: the `Transport` interface and the socket helpers its implementations share.
- `dgram`: the datagram transports, `UnixDgramTransport` and `InterfaceTransport` (AF_PACKET).
- `stream`: `UnixStreamTransport`, length-prefixed frames over a listening unix stream socket.
- `server`: `open_transport` (address -> open transport) and `ServeLoop`, the selectors loop running a
  `Target` on a transport, or one target per transport over the same exports (multipath).
- `paths`: multipath: each ``--transport`` with the MAC it answers from (`plan_paths`, `open_paths`).
- `command`: the click command `serve_command` (``netbootgen serve``), with `--export` specs or an
  inventory server (`inventory_plan`: its exports, each allowing the MACs of the machines booting from it).
- `process`: `ServeProcess`, ``netbootgen serve`` as a child process (started, ready, stopped, its output
  kept), for boot-test, the tests and the benchmark.

The AoE client (an initiator over the unix transports) and the busybox guest for QEMU live in
`netbootgen.testing` (`client`, `guest`).
"""
