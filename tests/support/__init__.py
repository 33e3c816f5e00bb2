"""Test support: real servers on real sockets, real clients, loopback only."""
