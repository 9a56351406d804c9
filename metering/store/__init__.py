"""Every SQL statement of metering, as functions taking a SQLAlchemy Connection."""
