"""Built-in experiments: each module's `get_config()` is one `fedjax-gen run` target."""
