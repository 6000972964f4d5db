<?php
// The old CppComet example backend's pattern, through mysqli and PDO (emulated prepares):
// log in as root with the dev_key, invite two users, read the room, kick one.
// Usage: php backend.php <port> <dev_key>. Prints one JSON object.
mysqli_report(MYSQLI_REPORT_OFF);
$port = (int)$argv[1];
$key = $argv[2];
$out = [];

$bad = @mysqli_connect("127.0.0.1", "root", "not-the-key", "CometQL_v1", $port);
$out["wrong_password_errno"] = $bad ? 0 : mysqli_connect_errno();

$link = mysqli_connect("127.0.0.1", "root", $key, "CometQL_v1", $port);
if (!$link) {
    fwrite(STDERR, "connect failed: " . mysqli_connect_error() . "\n");
    exit(1);
}
foreach ([2, 3] as $uid) {
    $ok = mysqli_query($link, "INSERT INTO conference (name, user_id, caller_id, message, profile) VALUES ('101', $uid, 2, '{}', 'video')");
    $out["insert_$uid"] = $ok ? mysqli_affected_rows($link) : -mysqli_errno($link);
}
$res = mysqli_query($link, "SELECT * FROM conference WHERE name = '101'");
$out["select"] = mysqli_fetch_all($res, MYSQLI_ASSOC);
$ok = mysqli_query($link, "DELETE FROM conference WHERE name='101' AND user_id=2");
$out["delete"] = $ok ? mysqli_affected_rows($link) : -mysqli_errno($link);
$res = mysqli_query($link, "SELECT user_id FROM conference WHERE name = '101'");
$out["after_delete"] = mysqli_fetch_all($res, MYSQLI_ASSOC);
$ok = mysqli_query($link, "SELECT * FROM users_auth");
$out["error"] = [mysqli_errno($link), mysqli_sqlstate($link), mysqli_error($link)];
$esc = mysqli_real_escape_string($link, "it's \"quoted\"");
mysqli_query($link, "INSERT INTO users_messages (id, event, message) VALUES (7, 'ev', '$esc')");
$res = mysqli_query($link, "SELECT message FROM users_messages WHERE id = 7");
$out["escaped_roundtrip"] = mysqli_fetch_row($res)[0];
mysqli_close($link);

$pdo = new PDO("mysql:host=127.0.0.1;port=$port;dbname=CometQL_v1", "root", $key);
$pdo->setAttribute(PDO::ATTR_ERRMODE, PDO::ERRMODE_EXCEPTION);
$st = $pdo->prepare("SELECT user_id, profile FROM conference WHERE name = ?");
$st->execute(["101"]);
$out["pdo_select"] = $st->fetchAll(PDO::FETCH_ASSOC);
try {
    $pdo->query("SELECT * FROM nope WHERE id = 1");
    $out["pdo_error"] = null;
} catch (PDOException $e) {
    $out["pdo_error"] = $e->errorInfo[1];
}
echo json_encode($out), "\n";
