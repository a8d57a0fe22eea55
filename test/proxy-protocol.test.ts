/**
 * The PROXY protocol codec (src/net/proxy-protocol.ts): byte-exact fixtures built from
 * proxy-protocol.txt (HAProxy), round trips, every malformed case, the prefix property and a
 * seeded fuzz that never throws.
 */
import { describe, expect, it } from 'vitest';
import {
  MAX_V2_HEADER_BYTES, PP2_SUBTYPE_SSL_CN, PP2_SUBTYPE_SSL_VERSION, PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, PP2_TYPE_CRC32C,
  PP2_TYPE_NETNS, PP2_TYPE_NOOP, PP2_TYPE_SSL, PP2_TYPE_UNIQUE_ID,
  buildProxyV1, buildProxyV2, crc32c, parseProxyHeader, type ProxyParseResult,
} from '../src/net/proxy-protocol.js';
import { prng } from './helpers/prng.js';

const SIG = '0d0a0d0a000d0a515549540a';
const hex = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const text = (s: string): Buffer => Buffer.from(s, 'latin1');
function ok(r: ProxyParseResult | null): Extract<ProxyParseResult, { ok: true }> {
  expect(r).not.toBeNull();
  if (!r!.ok) throw new Error(`expected a header, got ${r!.reason}`);
  return r!;
}
function tlv(type: number, value: Buffer): Buffer {
  const h = Buffer.alloc(3);
  h[0] = type;
  h.writeUInt16BE(value.length, 1);
  return Buffer.concat([h, value]);
}
function v2(verCmd: number, fam: number, body: Buffer): Buffer {
  const h = Buffer.alloc(4);
  h[0] = verCmd;
  h[1] = fam;
  h.writeUInt16BE(body.length, 2);
  return Buffer.concat([hex(SIG), h, body]);
}

describe('PROXY v1', () => {
  it('parses the example of the spec and leaves what follows', () => {
    const line = 'PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n';
    const r = ok(parseProxyHeader(text(`${line}GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n`)));
    expect(r.consumed).toBe(line.length);
    expect(r.header).toMatchObject({
      version: 1, command: 'proxy', family: 'inet', transport: 'stream',
      source: { address: '192.168.0.1', port: 56324 }, destination: { address: '192.168.0.11', port: 443 },
    });
  });

  it('takes the longest lines of the spec (56, 104, 15 and 107 bytes)', () => {
    const f = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';
    const lines = [
      'PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n',
      `PROXY TCP6 ${f} ${f} 65535 65535\r\n`,
      'PROXY UNKNOWN\r\n',
      `PROXY UNKNOWN ${f} ${f} 65535 65535\r\n`,
    ];
    expect(lines.map((l) => l.length)).toEqual([56, 104, 15, 107]);
    for (const l of lines) expect(ok(parseProxyHeader(text(l))).consumed).toBe(l.length);
    expect(ok(parseProxyHeader(text(lines[2]!))).header).toMatchObject({ family: 'unspec', source: null, destination: null });
    expect(ok(parseProxyHeader(text('PROXY TCP6 2001:db8::1 ::1 0 80\r\n'))).header.source).toEqual({ address: '2001:db8::1', port: 0 });
  });

  it('builds the lines nginx and HAProxy send', () => {
    expect(buildProxyV1({ address: '192.168.0.1', port: 56324 }, { address: '192.168.0.11', port: 443 }).toString('latin1'))
      .toBe('PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n');
    expect(buildProxyV1({ address: '::ffff:10.0.0.1', port: 1 }, { address: '10.0.0.2', port: 2 }).toString('latin1'))
      .toBe('PROXY TCP4 10.0.0.1 10.0.0.2 1 2\r\n');
    expect(buildProxyV1({ address: '2001:DB8:0:0:0:0:0:1', port: 1 }, { address: '10.0.0.2', port: 2 }).toString('latin1'))
      .toBe('PROXY TCP6 2001:db8::1 ::ffff:a00:2 1 2\r\n');
    expect(buildProxyV1({ address: '/tmp/sock', port: 0 }, { address: '10.0.0.2', port: 2 }).toString('latin1')).toBe('PROXY UNKNOWN\r\n');
  });

  const malformed: Array<[string, string]> = [
    ['GET / HTTP/1.1\r\n', 'not_proxy'],
    ['PROXZ TCP4 1.1.1.1 2.2.2.2 1 2\r\n', 'not_proxy'],
    ['PROXY TCP4 1.1.1.1 2.2.2.2 1 2\n', 'v1_syntax'], // a lone LF
    ['PROXY TCP4 1.1.1.1 2.2.2.2 1 2\rX', 'v1_syntax'], // a lone CR
    ['PROXY TCP4 1.1.1.1 2.2.2.2 1 2 \r\n', 'v1_syntax'],
    ['PROXY TCP4  1.1.1.1 2.2.2.2 1 2\r\n', 'v1_syntax'],
    ['PROXY  UNKNOWN\r\n', 'v1_syntax'],
    ['PROXYTCP4 1.1.1.1 2.2.2.2 1 2\r\n', 'v1_syntax'],
    ['PROXY TCP5 1.1.1.1 2.2.2.2 1 2\r\n', 'v1_syntax'],
    ['PROXY tcp4 1.1.1.1 2.2.2.2 1 2\r\n', 'v1_syntax'],
    ['PROXY TCP4 1.1.1.1 2.2.2.2 1\r\n', 'v1_syntax'],
    ['PROXY TCP4 1.1.1.01 2.2.2.2 1 2\r\n', 'v1_syntax'],
    ['PROXY TCP4 1.1.1.256 2.2.2.2 1 2\r\n', 'v1_syntax'],
    ['PROXY TCP4 1.1.1 2.2.2.2 1 2\r\n', 'v1_syntax'],
    ['PROXY TCP4 ::1 2.2.2.2 1 2\r\n', 'v1_syntax'],
    ['PROXY TCP6 1.1.1.1 ::1 1 2\r\n', 'v1_syntax'],
    ['PROXY TCP6 ::ffff:1.1.1.1 ::1 1 2\r\n', 'v1_syntax'],
    ['PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n', 'v1_syntax'],
    ['PROXY TCP6 1::2::3 ::1 1 2\r\n', 'v1_syntax'],
    ['PROXY TCP4 1.1.1.1 2.2.2.2 65536 2\r\n', 'v1_syntax'],
    ['PROXY TCP4 1.1.1.1 2.2.2.2 01 2\r\n', 'v1_syntax'],
    ['PROXY TCP4 1.1.1.1 2.2.2.2 -1 2\r\n', 'v1_syntax'],
    ['PROXY TCP4 1.1.1.1 2.2.2.2 1 2x\r\n', 'v1_syntax'],
    ['PROXY TCP4 1.1.1.1 2.2.2.2 1 2\0\r\n', 'v1_syntax'],
    ['PROXY TCP4 1.1.1.1 2.2.2.2 1 \xe9\r\n', 'v1_syntax'],
    [`PROXY UNKNOWN ${'x'.repeat(100)}\r\n`, 'v1_too_long'],
    [`PROXY UNKNOWN ${'x'.repeat(92)}\r\n`, 'v1_too_long'], // 108 bytes
  ];
  it.each(malformed)('refuses %j (%s)', (line, reason) => {
    expect(parseProxyHeader(text(line))).toEqual({ ok: false, reason });
  });

  it('waits for more while the line may still be valid, and not past 107 bytes', () => {
    expect(parseProxyHeader(text('PRO'))).toBeNull();
    expect(parseProxyHeader(text('PROXY TCP4 1.1.1.1'))).toBeNull();
    expect(parseProxyHeader(text('PROXY TCP4 1.1.1.1 2.2.2.2 1 2\r'))).toBeNull();
    expect(parseProxyHeader(text(`PROXY UNKNOWN ${'x'.repeat(91)}`))).toBeNull(); // 105 bytes: CRLF may follow
    expect(ok(parseProxyHeader(text(`PROXY UNKNOWN ${'x'.repeat(91)}\r\n`))).consumed).toBe(107);
    expect(parseProxyHeader(text(`PROXY UNKNOWN ${'x'.repeat(92)}`))).toEqual({ ok: false, reason: 'v1_too_long' }); // CRLF no longer fits
    expect(parseProxyHeader(new Uint8Array(0))).toBeNull();
  });
});

describe('PROXY v2', () => {
  const tcp4 = hex(`${SIG} 21 11 000c c0a80001 c0a8000b dc04 01bb`);
  it('parses TCP over IPv4 byte for byte, and builds the same bytes', () => {
    const r = ok(parseProxyHeader(Buffer.concat([tcp4, text('GET /')])));
    expect(r.consumed).toBe(28);
    expect(r.header).toMatchObject({
      version: 2, command: 'proxy', family: 'inet', transport: 'stream',
      source: { address: '192.168.0.1', port: 56324 }, destination: { address: '192.168.0.11', port: 443 }, tlvs: [],
    });
    expect(buildProxyV2({ address: '192.168.0.1', port: 56324 }, { address: '192.168.0.11', port: 443 })).toEqual(tcp4);
  });

  it('parses TCP and UDP over IPv6, UNIX addresses, LOCAL and UNSPEC', () => {
    const tcp6 = hex(`${SIG} 21 21 0024 20010db8000000000000000000000001 00000000000000000000ffff0a000002 0050 1f90`);
    expect(buildProxyV2({ address: '2001:db8::1', port: 80 }, { address: '10.0.0.2', port: 8080 })).toEqual(tcp6);
    expect(ok(parseProxyHeader(tcp6)).header).toMatchObject({
      family: 'inet6', source: { address: '2001:db8::1', port: 80 }, destination: { address: '::ffff:a00:2', port: 8080 },
    });
    const udp6 = Buffer.from(tcp6);
    udp6[13] = 0x22;
    expect(ok(parseProxyHeader(udp6)).header.transport).toBe('dgram');
    const path = (p: string): Buffer => { const b = Buffer.alloc(108); b.write(p); return b; };
    const unix = v2(0x21, 0x31, Buffer.concat([path('/run/client.sock'), path('/run/lb.sock')]));
    expect(ok(parseProxyHeader(unix)).header).toMatchObject({
      family: 'unix', source: { address: '/run/client.sock', port: 0 }, destination: { address: '/run/lb.sock', port: 0 },
    });
    const local = hex(`${SIG} 20 00 0000`);
    expect(ok(parseProxyHeader(local))).toMatchObject({ consumed: 16, header: { command: 'local', family: 'unspec', source: null } });
    expect(buildProxyV2({ address: 'x', port: 1 }, { address: '10.0.0.2', port: 1 })).toEqual(local);
    // LOCAL with an address block: the addresses are ignored (the connection's own are used).
    expect(ok(parseProxyHeader(v2(0x20, 0x11, tcp4.subarray(16)))).header).toMatchObject({ command: 'local', family: 'inet', source: null });
    // LOCAL with a block too short for its family: ignored whole.
    expect(ok(parseProxyHeader(v2(0x20, 0x21, Buffer.alloc(5)))).consumed).toBe(21);
    // PROXY over UNSPEC: no address; the length is still skipped.
    expect(ok(parseProxyHeader(v2(0x21, 0x00, Buffer.alloc(0)))).header).toMatchObject({ command: 'proxy', family: 'unspec', source: null });
  });

  it('decodes the TLVs: ALPN, authority, unique id, SSL, netns, NOOP, custom; checks CRC32C', () => {
    const ssl = Buffer.concat([hex('05 00000000'), tlv(PP2_SUBTYPE_SSL_VERSION, text('TLSv1.3')), tlv(PP2_SUBTYPE_SSL_CN, text('client.example'))]);
    const tlvs = [
      { type: PP2_TYPE_ALPN, value: text('h2') },
      { type: PP2_TYPE_AUTHORITY, value: text('shop.example.com') },
      { type: PP2_TYPE_UNIQUE_ID, value: Buffer.alloc(128, 7) },
      { type: PP2_TYPE_SSL, value: ssl },
      { type: PP2_TYPE_NETNS, value: text('blue') },
      { type: PP2_TYPE_NOOP, value: Buffer.alloc(0) },
      { type: 0xe0, value: text('custom') },
      { type: PP2_TYPE_CRC32C, value: Buffer.alloc(4) },
    ];
    const built = buildProxyV2({ address: '1.2.3.4', port: 5 }, { address: '6.7.8.9', port: 10 }, tlvs);
    const h = ok(parseProxyHeader(built)).header;
    expect(h).toMatchObject({
      alpn: 'h2', authority: 'shop.example.com', netns: 'blue',
      ssl: { client: 5, verified: true, version: 'TLSv1.3', commonName: 'client.example' },
    });
    expect(h.uniqueId).toEqual(Buffer.alloc(128, 7));
    expect(h.tlvs.map((t) => t.type)).toEqual(tlvs.map((t) => t.type));
    // The checksum covers the whole header: one changed bit anywhere fails it.
    const bad = Buffer.from(built);
    bad[17] = bad[17]! ^ 1;
    expect(parseProxyHeader(bad)).toEqual({ ok: false, reason: 'v2_crc' });
  });

  it('computes CRC32C (RFC 4960 check value)', () => {
    expect(crc32c(text('123456789'))).toBe(0xe3069283);
  });

  const addr4 = tcp4.subarray(16);
  const malformed: Array<[string, Buffer, string]> = [
    ['a wrong signature byte', hex(`0d0a0d0a000d0a515549540b 21 11 000c`), 'not_proxy'],
    ['version 1 in the binary form', v2(0x11, 0x11, addr4), 'v2_version'],
    ['version 3', v2(0x31, 0x11, addr4), 'v2_version'],
    ['command 2', v2(0x22, 0x11, addr4), 'v2_command'],
    ['family 4', v2(0x21, 0x41, addr4), 'v2_family'],
    ['transport 3', v2(0x21, 0x13, addr4), 'v2_family'],
    ['an IPv4 block too short', v2(0x21, 0x11, addr4.subarray(0, 11)), 'v2_address'],
    ['an IPv6 block too short', v2(0x21, 0x21, Buffer.alloc(35)), 'v2_address'],
    ['a UNIX block too short', v2(0x21, 0x31, Buffer.alloc(215)), 'v2_address'],
    ['a length over the bound', hex(`${SIG} 21 11 0ff1`), 'v2_too_long'],
    ['the largest length', hex(`${SIG} 21 11 ffff`), 'v2_too_long'],
    ['a TLV cut in its type-length', v2(0x21, 0x11, Buffer.concat([addr4, hex('01 00')])), 'v2_tlv'],
    ['a TLV longer than the header', v2(0x21, 0x11, Buffer.concat([addr4, hex('01 0003 6832')])), 'v2_tlv'],
    ['a unique id over 128 bytes', v2(0x21, 0x11, Buffer.concat([addr4, tlv(PP2_TYPE_UNIQUE_ID, Buffer.alloc(129))])), 'v2_tlv'],
    ['a CRC32C of 3 bytes', v2(0x21, 0x11, Buffer.concat([addr4, tlv(PP2_TYPE_CRC32C, Buffer.alloc(3))])), 'v2_tlv'],
    ['a wrong CRC32C', v2(0x21, 0x11, Buffer.concat([addr4, tlv(PP2_TYPE_CRC32C, Buffer.alloc(4))])), 'v2_crc'],
    ['an SSL TLV of 4 bytes', v2(0x21, 0x11, Buffer.concat([addr4, tlv(PP2_TYPE_SSL, Buffer.alloc(4))])), 'v2_tlv'],
    ['an SSL sub-TLV past its TLV', v2(0x21, 0x11, Buffer.concat([addr4, tlv(PP2_TYPE_SSL, Buffer.concat([Buffer.alloc(5), hex('21 0009 544c53')]))])), 'v2_tlv'],
  ];
  it.each(malformed)('refuses %s', (_name, bytes, reason) => {
    expect(parseProxyHeader(bytes)).toEqual({ ok: false, reason });
  });

  it('takes a header of exactly the bound and refuses the builder past it', () => {
    const fill = MAX_V2_HEADER_BYTES - 28 - 3;
    const h = buildProxyV2({ address: '1.2.3.4', port: 5 }, { address: '6.7.8.9', port: 10 }, [{ type: PP2_TYPE_NOOP, value: Buffer.alloc(fill) }]);
    expect(h.length).toBe(MAX_V2_HEADER_BYTES);
    expect(ok(parseProxyHeader(h)).consumed).toBe(MAX_V2_HEADER_BYTES);
    expect(() => buildProxyV2({ address: '1.2.3.4', port: 5 }, { address: '6.7.8.9', port: 10 }, [{ type: PP2_TYPE_NOOP, value: Buffer.alloc(fill + 1) }])).toThrow();
  });
});

/** Every header the tests use, valid ones. */
function validHeaders(): Buffer[] {
  const f = 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff';
  return [
    text('PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n'),
    text(`PROXY TCP6 ${f} ${f} 65535 65535\r\n`),
    text('PROXY UNKNOWN\r\n'),
    text(`PROXY UNKNOWN ${f} ${f} 65535 65535\r\n`),
    buildProxyV2({ address: '192.168.0.1', port: 56324 }, { address: '192.168.0.11', port: 443 }),
    buildProxyV2({ address: '2001:db8::1', port: 1 }, { address: '::1', port: 2 }, [
      { type: PP2_TYPE_ALPN, value: text('http/1.1') }, { type: PP2_TYPE_CRC32C, value: Buffer.alloc(4) },
    ]),
    hex(`${SIG} 20 00 0000`),
  ];
}

describe('properties', () => {
  it('round trips: what is built parses back to the same endpoints', () => {
    const rnd = prng(18);
    for (let i = 0; i < 500; i++) {
      const v6 = rnd() < 0.5;
      const addr = (): string => v6
        ? Array.from({ length: 8 }, () => Math.floor(rnd() * 65536).toString(16)).join(':')
        : Array.from({ length: 4 }, () => Math.floor(rnd() * 256)).join('.');
      const src = { address: addr(), port: Math.floor(rnd() * 65536) };
      const dst = { address: addr(), port: Math.floor(rnd() * 65536) };
      for (const built of [buildProxyV1(src, dst), buildProxyV2(src, dst)]) {
        const r = ok(parseProxyHeader(built));
        expect(r.consumed).toBe(built.length);
        const canon = (a: string): string => (v6 ? ipv6Canonical(a) : a);
        expect(r.header.source).toEqual({ address: canon(src.address), port: src.port });
        expect(r.header.destination).toEqual({ address: canon(dst.address), port: dst.port });
      }
    }
  });

  it('every prefix of a valid header gives null, and the whole header the same result whatever follows', () => {
    for (const h of validHeaders()) {
      const whole = parseProxyHeader(h);
      expect(whole?.ok).toBe(true);
      for (let n = 0; n < h.length; n++) expect(parseProxyHeader(h.subarray(0, n))).toBeNull();
      expect(parseProxyHeader(Buffer.concat([h, text('\r\nGET / HTTP/1.1\r\n')]))).toEqual(whole);
    }
  });

  it('every prefix of a malformed header gives null or the same failure (seeded mutations)', () => {
    const rnd = prng(7);
    for (let i = 0; i < 2000; i++) {
      const base = validHeaders()[i % 7]!;
      const m = Buffer.from(base);
      m[Math.floor(rnd() * m.length)] = Math.floor(rnd() * 256);
      const full = parseProxyHeader(m);
      if (full === null) continue;
      for (let n = 0; n <= m.length; n++) {
        const r = parseProxyHeader(m.subarray(0, n));
        if (r !== null) expect(r).toEqual(full);
      }
    }
  });

  it('never throws on random bytes, random prefixes of headers or random TLV soup (seeded)', () => {
    const rnd = prng(2024);
    const bytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => Math.floor(rnd() * 256)));
    let parsed = 0;
    for (let i = 0; i < 20_000; i++) {
      let input: Buffer;
      const k = i % 4;
      if (k === 0) input = bytes(Math.floor(rnd() * 200));
      else if (k === 1) input = Buffer.concat([hex(SIG), bytes(Math.floor(rnd() * 300))]);
      else if (k === 2) input = Buffer.concat([text('PROXY '), bytes(Math.floor(rnd() * 120))]);
      else {
        // A PROXY v2 header with a plausible length and random TLV bytes.
        const body = Buffer.concat([bytes(12), bytes(Math.floor(rnd() * 64))]);
        input = v2(0x21, 0x11, body);
        if (rnd() < 0.5) input[14] = Math.floor(rnd() * 256);
      }
      const r = parseProxyHeader(input);
      if (r !== null && r.ok) {
        parsed++;
        expect(r.consumed).toBeGreaterThan(0);
        expect(r.consumed).toBeLessThanOrEqual(input.length);
      }
    }
    expect(parsed).toBeGreaterThan(0);
  });
});

function ipv6Canonical(a: string): string {
  // The parser's text: node's URL gives RFC 5952 text of an IPv6 host.
  return new URL(`http://[${a}]/`).hostname.slice(1, -1);
}
