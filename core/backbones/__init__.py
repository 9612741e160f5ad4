"""polydiff subpackage."""
