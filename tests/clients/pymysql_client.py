"""CometQL through PyMySQL (Debian's python3-pymysql). Usage: pymysql_client.py <port> <key>.
Prints one JSON object."""
import json
import sys

import pymysql

port, key = int(sys.argv[1]), sys.argv[2]
out = {}
try:
    pymysql.connect(host="127.0.0.1", port=port, user="root", password="wrong", database="CometQL_v1")
    out["wrong_password"] = None
except pymysql.err.MySQLError as e:
    out["wrong_password"] = e.args[0]

conn = pymysql.connect(host="127.0.0.1", port=port, user="root", password=key,
                       database="CometQL_v1", autocommit=True)
with conn.cursor() as cur:
    out["insert_auth"] = cur.execute("INSERT INTO users_auth (id, hash) VALUES (%s, %s)", (42, "k3y"))
    cur.execute("SELECT * FROM users_auth WHERE id = %s", (42,))
    out["auth"] = [list(r) for r in cur.fetchall()]
    out["columns"] = [d[0] for d in cur.description]
    cur.execute("INSERT INTO conference (name, user_id, message, profile) VALUES ('py', 42, 'hello', 'audio')")
    cur.execute("SELECT user_id, profile, node FROM conference WHERE name = 'py'")
    out["conference"] = [list(r) for r in cur.fetchall()]
    try:
        cur.execute("SELECT * FROM users_auth WHERE id = 1 OR id = 2")
        out["or_error"] = None
    except pymysql.err.MySQLError as e:
        out["or_error"] = e.args[0]
conn.close()
print(json.dumps(out))
