"""A conservative reading of a Spark SQL expression without Spark (`sources.<role>.columns.<name>.expr`).

Ingest computes a derived column with Spark (`F.expr`), which is the authority on what an expression means. This
module only lets `lfm ingest` refuse the common mistakes before Spark starts (25-50 s): an expression that does not
tokenize (an unclosed quote, unbalanced brackets, a stray character) and the column names it refers to, so a
misspelled raw column is named at once. It is conservative: a word that is a Spark SQL keyword (`date`, `year`,
`user`) may be a column or a keyword, so it is only a reference where the source has such a column; a name before
`(` is a function, after `.` a struct field, before `->` a lambda variable. Whatever it cannot tell is left to
Spark, never refused here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

# Spark 4.0's SQL keywords (`SELECT keyword FROM sql_keywords()`), reserved or not.
KEYWORDS = frozenset("""
ADD AFTER AGGREGATE ALL ALTER ALWAYS ANALYZE AND ANTI ANY ANY_VALUE ARCHIVE ARRAY AS ASC AT ATOMIC AUTHORIZATION
BEGIN BETWEEN BIGINT BINARY BINDING BOOLEAN BOTH BUCKET BUCKETS BY BYTE CACHE CALL CALLED CASCADE CASE CAST
CATALOG CATALOGS CHANGE CHAR CHARACTER CHECK CLEAR CLUSTER CLUSTERED CODEGEN COLLATE COLLATION COLLECTION COLUMN
COLUMNS COMMENT COMMIT COMPACT COMPACTIONS COMPENSATION COMPUTE CONCATENATE CONDITION CONSTRAINT CONTAINS
CONTINUE COST CREATE CROSS CUBE CURRENT CURRENT_DATE CURRENT_TIME CURRENT_TIMESTAMP CURRENT_USER DATA DATABASE
DATABASES DATE DATEADD DATEDIFF DATE_ADD DATE_DIFF DAY DAYOFYEAR DAYS DBPROPERTIES DEC DECIMAL DECLARE DEFAULT
DEFINED DEFINER DELETE DELIMITED DESC DESCRIBE DETERMINISTIC DFS DIRECTORIES DIRECTORY DISTINCT DISTRIBUTE DIV
DO DOUBLE DROP ELSE ELSEIF END ESCAPE ESCAPED EVOLUTION EXCEPT EXCHANGE EXCLUDE EXECUTE EXISTS EXIT EXPLAIN
EXPORT EXTEND EXTENDED EXTERNAL EXTRACT FALSE FETCH FIELDS FILEFORMAT FILTER FIRST FLOAT FOLLOWING FOR FOREIGN
FORMAT FORMATTED FOUND FROM FULL FUNCTION FUNCTIONS GENERATED GLOBAL GRANT GROUP GROUPING HANDLER HAVING HOUR
HOURS IDENTIFIER IDENTITY IF IGNORE ILIKE IMMEDIATE IMPORT IN INCLUDE INCREMENT INDEX INDEXES INNER INPATH INPUT
INPUTFORMAT INSERT INT INTEGER INTERSECT INTERVAL INTO INVOKER IS ITEMS ITERATE JOIN JSON KEYS LANGUAGE LAST
LATERAL LAZY LEADING LEAVE LEFT LIKE LIMIT LINES LIST LOAD LOCAL LOCATION LOCK LOCKS LOGICAL LONG LOOP MACRO MAP
MATCHED MERGE MICROSECOND MICROSECONDS MILLISECOND MILLISECONDS MINUS MINUTE MINUTES MODIFIES MONTH MONTHS MSCK
NAME NAMESPACE NAMESPACES NANOSECOND NANOSECONDS NATURAL NO NONE NOT NULL NULLS NUMERIC OF OFFSET ON ONLY OPTION
OPTIONS OR ORDER OUT OUTER OUTPUTFORMAT OVER OVERLAPS OVERLAY OVERWRITE PARTITION PARTITIONED PARTITIONS PERCENT
PIVOT PLACING POSITION PRECEDING PRIMARY PRINCIPALS PROPERTIES PURGE QUARTER QUERY RANGE READS REAL RECORDREADER
RECORDWRITER RECOVER RECURSIVE REDUCE REFERENCES REFRESH RENAME REPAIR REPEAT REPEATABLE REPLACE RESET RESPECT
RESTRICT RETURN RETURNS REVOKE RIGHT ROLE ROLES ROLLBACK ROLLUP ROW ROWS SCHEMA SCHEMAS SECOND SECONDS SECURITY
SELECT SEMI SEPARATED SERDE SERDEPROPERTIES SESSION_USER SET SETS SHORT SHOW SINGLE SKEWED SMALLINT SOME SORT
SORTED SOURCE SPECIFIC SQL SQLEXCEPTION SQLSTATE START STATISTICS STORED STRATIFY STRING STRUCT SUBSTR SUBSTRING
SYNC SYSTEM_TIME SYSTEM_VERSION TABLE TABLES TABLESAMPLE TARGET TBLPROPERTIES TERMINATED THEN TIME TIMEDIFF
TIMESTAMP TIMESTAMPADD TIMESTAMPDIFF TIMESTAMP_LTZ TIMESTAMP_NTZ TINYINT TO TOUCH TRAILING TRANSACTION
TRANSACTIONS TRANSFORM TRIM TRUE TRUNCATE TRY_CAST TYPE UNARCHIVE UNBOUNDED UNCACHE UNION UNIQUE UNKNOWN UNLOCK
UNPIVOT UNSET UNTIL UPDATE USE USER USING VALUE VALUES VAR VARCHAR VARIABLE VARIANT VERSION VIEW VIEWS VOID WEEK
WEEKS WHEN WHERE WHILE WINDOW WITH WITHIN X YEAR YEARS ZONE
""".split())

_TOKEN = re.compile(r"""
    (?P<string>[xX]?'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
  | (?P<quoted>`(?:[^`]|``)+`)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?[A-Za-z]*)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>->|<=>|<=|>=|!=|<>|==|\|\||&&|::|[-+*/%<>=!~&|^(),.\[\]:?])
  | (?P<space>\s+)
""", re.VERBOSE)
_CLOSE = {")": "(", "]": "["}


class ExpressionError(ValueError):
    """An expression that cannot be a Spark SQL expression; the message says where."""


@dataclass(frozen=True)
class References:
    """The column names an expression refers to: `names` surely, `maybe` if the source has such a column (a word
    that is also a keyword)."""

    names: frozenset[str]
    maybe: frozenset[str]

    def missing(self, columns: list[str]) -> list[str]:
        """The sure references that are no column (Spark resolves names case-insensitively)."""
        have = {c.lower() for c in columns}
        return sorted(n for n in self.names if n.lower() not in have)

    def present(self, columns: list[str]) -> list[str]:
        """The columns the expression reads, of `columns`."""
        wanted = {n.lower() for n in self.names | self.maybe}
        return [c for c in columns if c.lower() in wanted]


def _tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            what = "an unclosed quote" if expr[pos] in "'\"`" else f"{expr[pos]!r}"
            raise ExpressionError(f"{what} at character {pos + 1} of {expr!r}")
        if m.lastgroup != "space":
            out.append((m.lastgroup, m.group()))
        pos = m.end()
    return out


def _balanced(expr: str, tokens: list[tuple[str, str]]) -> None:
    stack: list[str] = []
    for kind, text in tokens:
        if kind != "op":
            continue
        if text in "([":
            stack.append(text)
        elif text in _CLOSE and (not stack or stack.pop() != _CLOSE[text]):
            raise ExpressionError(f"an unmatched {text!r} in {expr!r}")
    if stack:
        raise ExpressionError(f"an unclosed {stack[-1]!r} in {expr!r}")


def _lambda_variables(tokens: list[tuple[str, str]]) -> set[str]:
    """`x -> ...` and `(a, b) -> ...`: names bound inside higher-order functions."""
    out: set[str] = set()
    for i, (kind, text) in enumerate(tokens):
        if text != "->" or i == 0:
            continue
        j = i - 1
        if tokens[j][0] == "name":
            out.add(tokens[j][1].lower())
        elif tokens[j][1] == ")":
            while j > 0 and tokens[j][1] != "(":
                j -= 1
                if tokens[j][0] == "name":
                    out.add(tokens[j][1].lower())
    return out


def references(expr: str) -> References:
    """The columns `expr` refers to; `ExpressionError` when it cannot be an expression."""
    if not expr.strip():
        raise ExpressionError("an empty expression")
    tokens = _tokens(expr)
    _balanced(expr, tokens)
    bound = _lambda_variables(tokens)
    names, maybe = set(), set()
    for i, (kind, text) in enumerate(tokens):
        after = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        before = tokens[i - 1][1] if i else ""
        if kind == "quoted" and before != ".":
            names.add(text[1:-1].replace("``", "`"))
        elif kind != "name" or before == "." or after in ("(", "->") or text.lower() in bound:
            continue
        elif text.upper() in KEYWORDS:
            maybe.add(text)
        else:
            names.add(text)
    return References(frozenset(names), frozenset(maybe))
