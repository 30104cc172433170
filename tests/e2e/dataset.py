"""The tables the end-to-end tests back up: every kind of value that has broken a CSV
path somewhere, an empty table, a table of several MB and a mixed-case schema and name.

`DDL` makes the tables (a template database holds only it, so every restore gets fresh,
empty tables); `DATA` fills the source database. Every table has an `id` to order by.
"""

from __future__ import annotations

from dataclasses import dataclass

DDL = r"""
CREATE TABLE public.csv_quoting (id int PRIMARY KEY, t text, u varchar(200));
CREATE TABLE public.whitespace (id int PRIMARY KEY, t text);
CREATE TABLE public.unicode_text (id int PRIMARY KEY, t text, c char(8));
CREATE TABLE public.nulls (id int PRIMARY KEY, t text, n numeric, b bytea, d date, a int[]);
CREATE TABLE public.binary_data (id int PRIMARY KEY, b bytea);
CREATE TABLE public.numbers (
    id int PRIMARY KEY, n numeric, f float8, r real, i8 bigint, i2 smallint, m money
);
CREATE TABLE public.empty_table (id int PRIMARY KEY, t text);
CREATE TABLE public.misc_types (
    id int PRIMARY KEY, j jsonb, a text[], ts timestamptz, iv interval, u uuid, bo boolean
);
CREATE SCHEMA "Sales Data";
CREATE TABLE "Sales Data"."Order Lines" (id int PRIMARY KEY, "Item Name" text, "Qty" int);
CREATE TABLE public.big_table (id int PRIMARY KEY, t text, n numeric);
"""

# E'' strings: \t \r \n are the characters themselves, \\ one backslash.
DATA = r"""
INSERT INTO public.csv_quoting VALUES
  (1, 'plain', 'x'),
  (2, 'a,b,c', ',leading and trailing,'),
  (3, 'say "hello"', '"'),
  (4, '""', '","'),
  (5, '"quoted field"', '''single'' quotes'),
  (6, E'comma, "quote" and\nnewline', E'\\.'),
  (7, '', ' '),
  (8, E'\\.', E'line\n\\.\nafter the end-of-data marker');
INSERT INTO public.whitespace VALUES
  (1, E'tab\there'), (2, E'cr\rhere'), (3, E'lf\nhere'), (4, E'crlf\r\nhere'),
  (5, E'\r\n'), (6, E'\n'), (7, E'  spaces  '), (8, E'back\\slash'), (9, E'\\N'),
  (10, E'\\\\double'), (11, E'trailing backslash\\'), (12, E'\t\r\n\t'),
  (13, E'\\t is not a tab'), (14, E'\x01\x02\x1f control');
INSERT INTO public.unicode_text VALUES
  (1, 'héllo wörld', 'ñandú'), (2, '日本語のテキスト', '中文'), (3, '🐘🦄💾 emoji', '🙂'),
  (4, 'עברית ועربية', 'rtl'), (5, E'zero\u200bwidth\ufeffbom', 'zw'),
  (6, E'combining e\u0301 a\u0308', 'é'), (7, E'\U0001F600 \u2028 line sep', 'x');
INSERT INTO public.nulls VALUES
  (1, NULL, NULL, NULL, NULL, NULL), (2, '', 0, '\x', '2000-01-01', '{}'),
  (3, 'NULL', NULL, NULL, NULL, '{NULL}'), (4, E'\\N', NULL, '\x00', NULL, '{1,NULL,3}'),
  (5, '""', NULL, NULL, 'infinity', NULL);
INSERT INTO public.binary_data
  SELECT 1, decode(string_agg(lpad(to_hex(g), 2, '0'), ''), 'hex')
  FROM generate_series(0, 255) AS g;
INSERT INTO public.binary_data VALUES
  (2, '\x'), (3, NULL), (4, '\x00000000'), (5, '\x0d0a2c22275c'),
  (6, decode(repeat('ff00', 5000), 'hex'));
INSERT INTO public.numbers VALUES
  (1, 'NaN', 'NaN', 'NaN', 9223372036854775807, 32767, '92233720368547758.07'),
  (2, 'Infinity', 'Infinity', 'Infinity', -9223372036854775808, -32768,
   '-92233720368547758.08'),
  (3, '-Infinity', '-Infinity', '-Infinity', 0, 0, 0),
  (4, 1e-1000, 1.7976931348623157e308, 3.4028235e38, 1, 1, 0.01),
  (5, -1e1000, 5e-324, 1.4e-45, -1, -1, -0.01),
  (6, 123456789012345678901234567890.123456789012345678901234567890, -0.0, -0.0, 42, 7, 1),
  (7, 0.000000000000000000000000000001, 2.2250738585072014e-308, 1.17549435e-38, 2, 2, 2),
  (8, NULL, NULL, NULL, NULL, NULL, NULL);
INSERT INTO public.misc_types VALUES
  (1, '{"a": "b,c", "q": "\"x\"", "n": null, "arr": [1, 2.5, "t\tab"]}',
   '{"a,b","c\"d","e\\f",NULL,""}', '2025-01-01 12:34:56.789+05:30', '1 year 2 mons 3 days',
   'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', true),
  (2, 'null', '{}', 'infinity', '-178000000 years', '00000000-0000-0000-0000-000000000000',
   false),
  (3, '[]', '{"{}"}', '1970-01-01 00:00:00+00', '0', NULL, NULL);
INSERT INTO "Sales Data"."Order Lines" VALUES
  (1, 'Widget, "deluxe"', 3), (2, E'Gadget\nsecond line', 1), (3, 'Ünïcödé', 0);
INSERT INTO public.big_table
  SELECT g, repeat(md5(g::text), 3) || E',"\t' || g, g * 1.5 FROM generate_series(1, 50000) AS g;
"""


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    oid: int = 0

    @property
    def fqn(self) -> str:
        """The quoted name, as gpbackup writes it in its COPY commands."""
        return f'"{self.schema}"."{self.name}"'

    def __str__(self) -> str:
        return f"{self.schema}.{self.name}"


TABLES = [
    Table("public", "csv_quoting"),
    Table("public", "whitespace"),
    Table("public", "unicode_text"),
    Table("public", "nulls"),
    Table("public", "binary_data"),
    Table("public", "numbers"),
    Table("public", "empty_table"),
    Table("public", "misc_types"),
    Table("Sales Data", "Order Lines"),
    Table("public", "big_table"),  # created last: the highest oid, so the end of the stream
]
# A filtered restore (gprestore --include-table): small tables from the start and the
# middle of the stream, never the big one at its end, so the helper closes early.
SELECTED = ["public.csv_quoting", "public.empty_table", "Sales Data.Order Lines"]
