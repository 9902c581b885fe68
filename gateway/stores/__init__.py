"""Session stores: one module per backend, all behind :class:`gateway.stores.base.SessionStore`."""
