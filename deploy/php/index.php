<?php
// Demo app of deploy/docker-compose.yml: which backend answered, and a per-session counter
// kept in memcached (php-session.ini). Behind sessionlb (sticky "learn"), a client with a
// cookie jar keeps getting the same backend.
declare(strict_types=1);

$backend = gethostname() ?: 'unknown';
$path = parse_url($_SERVER['REQUEST_URI'] ?? '/', PHP_URL_PATH);

header('Content-Type: text/plain; charset=utf-8');
header('Cache-Control: no-store');
header('X-Backend: ' . $backend);

if ($path === '/health') {
    // sessionlb's health check (healthCheck.path, body "^ok"): no session, no memcached.
    echo "ok\n";
    return;
}

session_start();

if ($path === '/logout') {
    // Deletes the cookie (Max-Age=0): sessionlb drops the session's binding too.
    $_SESSION = [];
    session_destroy();
    $p = session_get_cookie_params();
    setcookie(session_name(), '', [
        'expires' => 1, 'path' => $p['path'], 'domain' => $p['domain'],
        'secure' => $p['secure'], 'httponly' => $p['httponly'], 'samesite' => $p['samesite'],
    ]);
    echo "logged out (served by {$backend})\n";
    return;
}

$_SESSION['count'] = ($_SESSION['count'] ?? 0) + 1;
$_SESSION['first_backend'] ??= $backend;

printf("backend: %s\n", $backend);
printf("session: %s... (first served by %s)\n", substr(session_id(), 0, 8), $_SESSION['first_backend']);
printf("count:   %d\n", $_SESSION['count']);
