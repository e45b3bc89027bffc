"""PostgreSQL: the ORM tables (`models`), engines and sessions (`engine`) and migrations (`migrate`)."""
