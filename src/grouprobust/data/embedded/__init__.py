"""Embedded datasets, generated offline in seconds; importing this package registers them."""

from grouprobust.data.embedded import colored_digits, spurious_gaussian, toxic_templates  # noqa: F401
