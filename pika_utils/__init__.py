"""Shared code for the book."""
import logging

# A library logs, its user decides what to show: the command line prints these records, a
# chapter states where its models and data came from in one provenance note instead.
logging.getLogger(__name__).addHandler(logging.NullHandler())
