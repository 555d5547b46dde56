"""Backend adapters: one family per deployment kind, each implementing `runtime.ports`."""
