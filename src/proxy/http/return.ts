/**
 * nginx `return` (of a server or a location), answered without an upstream: a redirect
 * (301/302/303/307/308) with its Location (a relative one made absolute from the request's scheme,
 * Host and the port it came on, as nginx's absolute_redirect and port_in_redirect do) and nginx's
 * small HTML page; another code with its text (Content-Type text/plain, nginx's default_type), or
 * the error page of a 4xx/5xx without text; 444 closes the connection without a response.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddHeaderConfig, ReturnConfig } from '../../config/model.js';
import { addedHeaders, appendAddHeaders } from '../../config/response-headers.js';
import { requestScheme, type VariableSource } from '../../nginx-language/variables.js';
import { REDIRECT_CODES } from '../../config/locations.js';
import { normaliseHost } from '../../nginx-language/server-names.js';
import { errorPage, sendError } from './errors.js';
import { isHttp2Response } from './http2.js';

/** The variables' view of one request (a return is rare: one small object per returned request). */
class ReturnSource implements VariableSource {
  constructor(readonly req: IncomingMessage, readonly remoteAddress: string) {}
}

/**
 * Answers `req` with `ret`; `close`: drop keep-alive (the client waits for 100-continue).
 * Returns the status and the body bytes for the access log (status 444: the connection was closed).
 */
export function sendReturn(
  req: IncomingMessage, res: ServerResponse, ret: ReturnConfig, remoteAddress: string, serverName: string, close: boolean,
  /** The location's add_header (nginx adds them to a return's response too); [] for a server's return. */
  addHeaders: readonly AddHeaderConfig[] = [],
): { status: number; bytes: number } {
  const code = ret.code;
  req.resume(); // a body is read and dropped, as nginx discards it
  if (code === 444) {
    res.destroy();
    return { status: 444, bytes: 0 };
  }
  const src = new ReturnSource(req, remoteAddress);
  const headers: string[] = [];
  let body: Buffer;
  if (REDIRECT_CODES.has(code) && ret.url !== null) {
    let location = ret.url.evaluate(src);
    if (location.charCodeAt(0) === 47 /* / */) location = absolute(req, serverName) + location;
    if (/[\r\n\0]/.test(location)) return { status: 500, bytes: sendError(res, 500, true) };
    body = errorPage(code);
    headers.push('Content-Type', 'text/html', 'Location', location);
  } else if (ret.text !== null) {
    body = Buffer.from(ret.text.evaluate(src), 'latin1');
    headers.push('Content-Type', 'text/plain');
  } else if (code >= 400) {
    return { status: code, bytes: sendError(res, code, close, addedHeaders(addHeaders, code, src)) };
  } else {
    body = Buffer.alloc(0);
  }
  headers.push('Content-Length', String(body.length));
  appendAddHeaders(headers, addHeaders, code, src);
  if (close && !isHttp2Response(res)) {
    res.shouldKeepAlive = false;
    headers.push('Connection', 'close');
  }
  res.writeHead(code, headers);
  if (req.method === 'HEAD') {
    res.end();
    return { status: code, bytes: 0 };
  }
  res.end(body);
  return { status: code, bytes: body.length };
}

/** nginx's scheme://host[:port] before a relative redirect: the Host (else the server name) and the local port unless the scheme's default. */
function absolute(req: IncomingMessage, serverName: string): string {
  const tls = requestScheme(req) === 'https';
  let host = normaliseHost(req.headers.host ?? (req.headers[':authority'] as string | undefined) ?? '');
  if (host === '') host = serverName;
  const port = req.socket?.localPort;
  const portText = port === undefined || port === (tls ? 443 : 80) ? '' : `:${port}`;
  return `${tls ? 'https' : 'http'}://${host}${portText}`;
}
