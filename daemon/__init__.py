"""The daemon process: configuration, lifecycle, the socket server.

Kept free of imports so that the client can use `reverie.daemon.config`
without pulling in trio or the store.
"""
