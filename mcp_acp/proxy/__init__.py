"""The reference proxy: a stdio relay with one policy enforcement point."""
