"""Request and response filters built from config, one concern each (DESIGN.md "The shape")."""
