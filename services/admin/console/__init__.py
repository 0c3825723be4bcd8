"""The web console (siremis for a cluster): server-rendered shell, small vanilla JS."""
