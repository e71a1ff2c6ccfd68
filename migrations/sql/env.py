"""Alembic environment for the SQL graph store; `SQLStore.upgrade()` runs it in-process."""

from alembic import context
from sqlalchemy import create_engine

config = context.config


def _run(connection) -> None:
    context.configure(connection=connection, target_metadata=None, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:  # plain `alembic -x ...` use: open the URL from the config
    with create_engine(config.get_main_option("sqlalchemy.url")).begin() as conn:
        _run(conn)
