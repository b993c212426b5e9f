"""AoE export servers: vblade systemd units."""
