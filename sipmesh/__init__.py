"""sipmesh: a SIP server platform in the tradition of Kamailio, as Python services."""

__version__ = "0.1.0"
