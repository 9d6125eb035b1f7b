"""The demo: small backends and a proxy in front of them, for the README's first command."""
