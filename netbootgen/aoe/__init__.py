"""User-mode ATA over Ethernet (AoE) target: protocol, target logic, transports, `serve` command."""
