"""Integrations with frameworks (walkeeper.contrib.django). Nothing in walkeeper imports them."""
