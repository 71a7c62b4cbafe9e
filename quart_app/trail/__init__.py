"""Reading the trail back, from log files or the PostgreSQL table: one reader for
``quart-app-log``, the load tool's ``--verify`` and the tests.

* :mod:`.query`: the filters (user, address or network, time window);
* :mod:`.lines`: which log lines to parse, and parsing them without raising;
* :mod:`.files`: whole files, plain or gzip-compressed, and the live one followed;
* :mod:`.table`: the table's rows, searched, counted and purged;
* :mod:`.found`: what they yield: a record with its place, or what was bad where.

Importing it loads neither asyncpg nor the app's runtime beyond the record formats.
"""

from .files import Tail, read_file, read_files
from .found import Bad, Found
from .query import Query, parse_network

__all__ = ["Bad", "Found", "Query", "Tail", "parse_network", "read_file", "read_files"]
