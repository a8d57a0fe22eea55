/**
 * The request nginx makes for an internal redirect (errorPage `uri`): the client's request with
 * another URI, GET (HEAD stays HEAD), without a body (no Content-Length, Transfer-Encoding or
 * Expect), with the same client address; already complete.
 */
import { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { copyRequestClient } from '../../net/client-address.js';

const BODY_HEADERS = new Set(['content-length', 'transfer-encoding', 'expect']);

export function internalRequest(original: IncomingMessage, uri: string): IncomingMessage {
  const req = new IncomingMessage(original.socket as Socket);
  req.method = original.method === 'HEAD' ? 'HEAD' : 'GET';
  req.url = uri;
  req.httpVersionMajor = original.httpVersionMajor;
  req.httpVersionMinor = original.httpVersionMinor;
  req.httpVersion = original.httpVersion;
  const raw: string[] = [];
  for (let i = 0; i < original.rawHeaders.length; i += 2) {
    if (BODY_HEADERS.has(original.rawHeaders[i]!.toLowerCase())) continue;
    raw.push(original.rawHeaders[i]!, original.rawHeaders[i + 1]!);
  }
  req.rawHeaders = raw;
  const headers = { ...original.headers };
  for (const name of BODY_HEADERS) delete headers[name];
  req.headers = headers;
  copyRequestClient(original, req);
  req.complete = true;
  req.push(null);
  return req;
}
