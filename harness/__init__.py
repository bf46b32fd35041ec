"""A test harness for distributed slot coordination.

Kept free of imports: the coordinator and proxy images import subpackages of
``harness`` with only their own dependencies installed.
"""

__version__ = "0.1.0"
