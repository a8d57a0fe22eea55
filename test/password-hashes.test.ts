import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import bcrypt from 'bcryptjs';
import { describe, expect, it } from 'vitest';
import { hashScheme, parseHtpasswd } from '../src/config/htpasswd.js';
import { md5Crypt, shaCrypt, verifyPassword } from '../src/proxy/http/password-hashes.js';
import { compileIpRule, ipAllowed, type IpRule } from '../src/net/ip-rules.js';
import { findBinary } from './helpers/memcached.js';

const OPENSSL = findBinary('openssl');
const pw = (s: string): Buffer => Buffer.from(s, 'utf8');

describe('SHA-crypt (Drepper\'s specification vectors)', () => {
  const vectors: Array<[string, string, string]> = [
    ['$5$saltstring', 'Hello world!', '$5$saltstring$5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5'],
    ['$5$rounds=10000$saltstringsaltstring', 'Hello world!', '$5$rounds=10000$saltstringsaltst$3xv.VbSHBb41AL9AvLeujZkZRBAwqFMz2.opqey6IcA'],
    ['$5$rounds=10$roundstoolow', 'the minimum number is still observed', '$5$rounds=1000$roundstoolow$yfvwcWrQ8l/K0DAWyuPMDNHpIVlTQebY9l/gL972bIC'],
    ['$6$saltstring', 'Hello world!', '$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1'],
    ['$6$rounds=10000$saltstringsaltstring', 'Hello world!', '$6$rounds=10000$saltstringsaltst$OW1/O6BYHV6BcXZu8QVeXbDWra3Oeqh0sbHbbMCVNSnCM/UrjmM0Dp8vOuZeHBy/YTBmSK6H9qs/y3RnOaw5v.'],
    ['$6$rounds=10$roundstoolow', 'the minimum number is still observed', '$6$rounds=1000$roundstoolow$kUMsbe306n21p9R.FRkW3IGn.S9NPN0x50YhH1xhLsPuWGsUSklZt58jaTfF4ZEQpyUNGc0dqbpBYYBaHHrsX.'],
  ];
  it.each(vectors)('%s', async (setting, password, expected) => {
    expect(shaCrypt(pw(password), setting)).toBe(expected);
    expect(await verifyPassword({ scheme: setting.startsWith('$5') ? 'sha256-crypt' : 'sha512-crypt', hash: expected }, pw(password))).toBe(true);
    expect(await verifyPassword({ scheme: setting.startsWith('$5') ? 'sha256-crypt' : 'sha512-crypt', hash: expected }, pw(password + 'x'))).toBe(false);
  });
});

describe('apr1, {SHA}, bcrypt (Apache\'s documented examples)', () => {
  it('apr1: htpasswd -nbm myName myPassword', async () => {
    expect(md5Crypt(pw('myPassword'), '$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/')).toBe('$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/');
    expect(await verifyPassword({ scheme: 'apr1', hash: '$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/' }, pw('mypassword'))).toBe(false);
  });
  it('{SHA}: htpasswd -nbs myName myPassword', async () => {
    expect(await verifyPassword({ scheme: 'sha1', hash: '{SHA}VBPuJHI7uixaa6LQGWx4s+5GKNE=' }, pw('myPassword'))).toBe(true);
    expect(await verifyPassword({ scheme: 'sha1', hash: '{SHA}VBPuJHI7uixaa6LQGWx4s+5GKNE=' }, pw('myPassword '))).toBe(false);
  });
  it('bcrypt $2y$: htpasswd -nbB myName myPassword', async () => {
    const hash = '$2y$05$c4WoMPo3SXsafkva.HHa6uXQZWr7oboPiC2bT/r7q1BB8I2s0BRqC';
    expect(hashScheme(hash)).toBe('bcrypt');
    expect(await verifyPassword({ scheme: 'bcrypt', hash }, pw('myPassword'))).toBe(true);
    expect(await verifyPassword({ scheme: 'bcrypt', hash }, pw('myPassworD'))).toBe(false);
    const made = bcrypt.hashSync('é and more', 4);
    expect(await verifyPassword({ scheme: 'bcrypt', hash: made }, pw('é and more'))).toBe(true);
  });
  it('{PLAIN} and {SSHA}', async () => {
    expect(await verifyPassword({ scheme: 'plain', hash: 'secret' }, pw('secret'))).toBe(true);
    expect(await verifyPassword({ scheme: 'plain', hash: 'secret' }, pw('secre'))).toBe(false);
    // slappasswd -s secret -h {SSHA}, salt "salt": base64(sha1("secret" + "salt") + "salt")
    const ssha = `{SSHA}${Buffer.concat([createHash('sha1').update('secretsalt').digest(), Buffer.from('salt')]).toString('base64')}`;
    expect(hashScheme(ssha)).toBe('ssha');
    expect(await verifyPassword({ scheme: 'ssha', hash: ssha }, pw('secret'))).toBe(true);
    expect(await verifyPassword({ scheme: 'ssha', hash: ssha }, pw('secreT'))).toBe(false);
  });
});

describe.skipIf(OPENSSL === null)('hashes made by openssl passwd at test time', () => {
  for (const [flag, scheme] of [['-5', 'sha256-crypt'], ['-6', 'sha512-crypt'], ['-apr1', 'apr1'], ['-1', 'md5-crypt']] as const) {
    it(`openssl passwd ${flag}`, async () => {
      for (let i = 0; i < 8; i++) {
        const password = randomBytes(1 + i * 3).toString('base64');
        const hash = execFileSync(OPENSSL!, ['passwd', flag, password]).toString().trim();
        expect(hashScheme(hash)).toBe(scheme);
        expect(await verifyPassword({ scheme, hash }, pw(password))).toBe(true);
        expect(await verifyPassword({ scheme, hash }, pw(password.slice(1)))).toBe(false);
      }
    });
  }
});

describe('verification in slices', () => {
  it('SHA-crypt runs between other events: timers fire while a default 5000-round SHA-512 hash is checked', async () => {
    const hash = '$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1';
    let ticks = 0;
    const timer = setInterval(() => { ticks++; }, 0);
    const results = await Promise.all([1, 2, 3, 4].map(() => verifyPassword({ scheme: 'sha512-crypt', hash }, pw('Hello world!'))));
    clearInterval(timer);
    expect(results).toEqual([true, true, true, true]);
    expect(ticks).toBeGreaterThan(2);
  });
});

describe('htpasswd files', () => {
  it('refuses crypt(3) DES and unknown schemes, naming the line, never the hash', () => {
    const { problems } = parseHtpasswd('# comment\nalice:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/\nbob:rl0hN3Vf9ALvM\ncarol:$9$zz\n', '/etc/htpasswd');
    expect(problems).toHaveLength(2);
    expect(problems[0]).toMatch(/^\/etc\/htpasswd:3: the password of user "bob" is a crypt\(3\) DES hash/);
    expect(problems[0]).not.toContain('rl0hN3Vf9ALvM');
    expect(problems[1]).toMatch(/^\/etc\/htpasswd:4: .*unsupported scheme "9"/);
  });
  it('warns about {PLAIN} and {SHA}; keeps the first line of a user; reads comments after the hash', () => {
    const { parsed, problems } = parseHtpasswd('a:{PLAIN}p:w:x\nb:{SHA}VBPuJHI7uixaa6LQGWx4s+5GKNE=:comment\nb:{PLAIN}other\n', 'f');
    expect(problems).toEqual([]);
    expect(parsed.users.get('a')).toEqual({ scheme: 'plain', hash: 'p:w:x' });
    expect(parsed.users.get('b')!.scheme).toBe('sha1');
    expect(parsed.warnings.join('\n')).toMatch(/users a have \{PLAIN\}/);
    expect(parsed.warnings.join('\n')).toMatch(/users b have \{SHA\}/);
    expect(parsed.warnings.join('\n')).not.toContain('p:w:x');
  });
});

describe('allow/deny rules', () => {
  const rules = (...spec: Array<[boolean, string]>): IpRule[] => spec.map(([a, t]) => {
    const r = compileIpRule(a, t);
    if (typeof r === 'string') throw new Error(r);
    return r;
  });
  it('first match wins, by family; no match allows', () => {
    const list = rules([false, '10.1.2.3'], [true, '10.0.0.0/8'], [true, '2001:db8::/32'], [false, 'all']);
    expect(ipAllowed(list, '10.1.2.3')).toBe(false);
    expect(ipAllowed(list, '10.200.0.1')).toBe(true);
    expect(ipAllowed(list, '11.0.0.1')).toBe(false);
    expect(ipAllowed(list, '2001:db8:1::5')).toBe(true);
    expect(ipAllowed(list, '2001:db9::5')).toBe(false);
    expect(ipAllowed(list, '')).toBe(false); // not an address: only `all`
    expect(ipAllowed(rules([false, '10.0.0.0/8']), '192.168.0.1')).toBe(true);
  });
  it('IPv6 forms: ::, embedded IPv4, zone ids, full form, host bits masked', () => {
    const list = rules([true, '::1'], [true, 'fe80::/10'], [true, '64:ff9b::1.2.3.0/120'], [true, '2001:db8:0:0:1:0:0:1'], [true, '172.16.5.4/12'], [false, 'all']);
    for (const ok of ['::1', '0:0:0:0:0:0:0:1', 'fe80::1%eth0', 'FE80::abcd', '64:ff9b::1.2.3.77', '64:ff9b::102:3ff', '2001:db8::1:0:0:1', '172.31.255.255']) {
      expect(ipAllowed(list, ok), ok).toBe(true);
    }
    for (const no of ['::2', '::', '64:ff9b::1.2.4.1', '2001:db8::1:0:0:2', '172.32.0.0', '1::2::3', '1:2:3:4:5:6:7:8:9', 'garbage']) {
      expect(ipAllowed(list, no), no).toBe(false);
    }
  });
  it('rejects what is not an address or CIDR', () => {
    expect(compileIpRule(true, '10.0.0.0/33')).toMatch(/invalid prefix/);
    expect(compileIpRule(true, 'example.com')).toMatch(/not "all"/);
    expect(compileIpRule(true, '::1/129')).toMatch(/invalid prefix/);
  });
});
