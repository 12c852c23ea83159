/**
 * Entra ID bearer tokens, checked against a local JWKS server with keys made in the test.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Module } from '@nestjs/common';
import type { TokenCredential } from '@azure/core-auth';
import { exportJWK, generateKeyPair, SignJWT, type JWK, type CryptoKey } from 'jose';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { OnConnect, WebPubSubHub, WebPubSubModule, type EntraAuthOptions } from 'nestjs-web-pubsub';
import {
  ADAPTERS,
  CONNECTION_STRING,
  connectBody,
  sendEvent,
  startApp,
  type RunningApp,
} from './upstream-helpers.js';

const TENANT = '72f988bf-86f1-41af-91ab-2d7cd011db47';
const AUDIENCE = 'api://webpubsub-upstream';
const SERVICE_OID = '11111111-2222-3333-4444-555555555555';

interface Key {
  kid: string;
  privateKey: CryptoKey;
  jwk: JWK;
}
const makeKey = async (kid: string): Promise<Key> => {
  const { privateKey, publicKey } = await generateKeyPair('RS256');
  return {
    kid,
    privateKey,
    jwk: { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' },
  };
};

/** Serves the keys it is given and counts the fetches. */
let published: Key[] = [];
let jwksFetches = 0;
let jwksServer: Server;
let jwksUri = '';
let oldKey: Key;
let newKey: Key;

const handled: string[] = [];

@WebPubSubHub('chat')
class Hub {
  @OnConnect()
  connect() {
    handled.push('connect');
    return { userId: 'u' };
  }
}

const entra = (): EntraAuthOptions => ({
  audience: AUDIENCE,
  tenantId: TENANT,
  allowedObjectIds: [SERVICE_OID],
  jwksUri,
  jwksCooldownSeconds: 0,
});

async function token(
  key: Key,
  claims: Record<string, unknown> = {},
  { expiresIn = '1h', issuer = `https://sts.windows.net/${TENANT}/`, audience = AUDIENCE } = {},
) {
  return new SignJWT({ oid: SERVICE_OID, ...claims })
    .setProtectedHeader({ alg: 'RS256', kid: key.kid })
    .setIssuer(issuer)
    .setAudience(audience)
    .setIssuedAt()
    .setExpirationTime(expiresIn)
    .sign(key.privateKey);
}

const bearer = async (...args: Parameters<typeof token>) => ({
  authorization: `Bearer ${await token(...args)}`,
});

beforeAll(async () => {
  oldKey = await makeKey('key-1');
  newKey = await makeKey('key-2');
  jwksServer = createServer((_req, res) => {
    jwksFetches++;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ keys: published.map((k) => k.jwk) }));
  });
  await new Promise<void>((resolve) => jwksServer.listen(0, '127.0.0.1', resolve));
  jwksUri = `http://127.0.0.1:${(jwksServer.address() as AddressInfo).port}/keys`;
});
afterAll(() => new Promise((resolve) => jwksServer.close(resolve)));
beforeEach(() => {
  handled.length = 0;
  published = [oldKey];
});

describe.each(ADAPTERS)('Entra ID bearer tokens over %s', (adapter) => {
  let running: RunningApp;

  beforeAll(async () => {
    @Module({
      imports: [
        WebPubSubModule.forRoot({ connectionString: CONNECTION_STRING, auth: { entra: entra() } }),
      ],
      providers: [Hub],
    })
    class KeysAndEntraModule {}
    running = await startApp(KeysAndEntraModule, { adapter });
  });
  afterAll(() => running.close());

  const send = async (
    headers: Record<string, string>,
    key: string | null | undefined = undefined,
  ) => sendEvent(running.url, { headers, key }, connectBody());

  it('accepts a valid token with a valid signature, fetching the keys once', async () => {
    const fetchesBefore = jwksFetches;
    const headers = await bearer(oldKey);
    expect((await send(headers)).status).toBe(200);
    expect((await send(headers)).status).toBe(200);
    expect((await send(await bearer(oldKey, { n: 2 }))).status).toBe(200);
    expect(jwksFetches - fetchesBefore).toBeLessThanOrEqual(1);
    expect(handled).toEqual(['connect', 'connect', 'connect']);
  });

  it('accepts the v2 issuer of the tenant', async () => {
    const headers = await bearer(
      oldKey,
      {},
      {
        issuer: `https://login.microsoftonline.com/${TENANT}/v2.0`,
      },
    );
    expect((await send(headers)).status).toBe(200);
  });

  it.each([
    ['no token', async () => ({}), /Missing bearer token/],
    ['another audience', () => bearer(oldKey, {}, { audience: 'api://other' }), /"aud"/],
    [
      'another issuer',
      () => bearer(oldKey, {}, { issuer: 'https://sts.windows.net/evil/' }),
      /"iss"/,
    ],
    ['an expired token', () => bearer(oldKey, {}, { expiresIn: '-5m' }), /"exp"/],
    [
      'a token not valid yet',
      async () => {
        const jwt = await new SignJWT({ oid: SERVICE_OID })
          .setProtectedHeader({ alg: 'RS256', kid: oldKey.kid })
          .setIssuer(`https://sts.windows.net/${TENANT}/`)
          .setAudience(AUDIENCE)
          .setNotBefore('10m')
          .setExpirationTime('1h')
          .sign(oldKey.privateKey);
        return { authorization: `Bearer ${jwt}` };
      },
      /"nbf"/,
    ],
    [
      'a caller that is not the service',
      () => bearer(oldKey, { oid: 'someone-else' }),
      /not an allowed identity/,
    ],
    [
      'a key the tenant never published',
      async () => bearer(await makeKey('key-x')),
      /no applicable key/i,
    ],
    [
      'a forged signature',
      async () => {
        const jwt = await token(oldKey);
        return { authorization: `Bearer ${jwt.slice(0, -4)}AAAA` };
      },
      /signature/,
    ],
  ])('answers 401 for %s, and the handler never runs', async (_case, headers, reason) => {
    const res = await send(await headers());
    expect(res.status).toBe(401);
    expect(res.json().message).toMatch(reason);
    expect(handled).toEqual([]);
  });

  it('tolerates a small clock skew', async () => {
    expect((await send(await bearer(oldKey, {}, { expiresIn: '-20s' }))).status).toBe(200);
  });

  it('fetches the keys again when a token names a new key (rotation)', async () => {
    published = [oldKey, newKey];
    const before = jwksFetches;
    const res = await send(await bearer(newKey));
    expect(res.status).toBe(200);
    expect(jwksFetches - before).toBe(1);
    expect(res.status).toBe(200);
  });

  it('still demands the signature: both checks must pass', async () => {
    const res = await send(await bearer(oldKey), null);
    expect(res.status).toBe(401);
    expect(res.json().message).toBe('Invalid or missing ce-signature');
    expect(handled).toEqual([]);
  });

  it('never demands a token on the abuse-protection probe', async () => {
    const res = await fetch(`${running.url}/eventhandler`, {
      method: 'OPTIONS',
      headers: { 'WebHook-Request-Origin': 'localhost' },
    });
    expect(res.status).toBe(200);
  });
});

describe('Entra ID alone, with local auth disabled', () => {
  let running: RunningApp;
  beforeAll(async () => {
    const credential: TokenCredential = { getToken: async () => null };
    @Module({
      imports: [
        WebPubSubModule.forRoot({
          endpoint: 'https://x.webpubsub.azure.com',
          credential,
          auth: { entra: entra() },
        }),
      ],
      providers: [Hub],
    })
    class EntraOnlyModule {}
    running = await startApp(EntraOnlyModule);
  });
  afterAll(() => running.close());

  it('needs no signature, only the token', async () => {
    const ok = await sendEvent(
      running.url,
      { key: null, headers: await bearer(oldKey) },
      connectBody(),
    );
    expect(ok.status).toBe(200);
    const refused = await sendEvent(running.url, { key: null }, connectBody());
    expect(refused.status).toBe(401);
  });
});

describe('Entra ID with its keys out of reach', () => {
  let running: RunningApp;
  beforeAll(async () => {
    // A port that was just free: nothing answers there.
    const probe = createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
    @Module({
      imports: [
        WebPubSubModule.forRoot({
          connectionString: CONNECTION_STRING,
          auth: { entra: { ...entra(), jwksUri: `http://127.0.0.1:${port}/keys` } },
        }),
      ],
      providers: [Hub],
    })
    class UnreachableKeysModule {}
    running = await startApp(UnreachableKeysModule);
  });
  afterAll(() => running.close());

  it('answers 503 with a generic message, and the handler never runs', async () => {
    const res = await sendEvent(running.url, { headers: await bearer(oldKey) }, connectBody());
    expect(res.status).toBe(503);
    expect(res.json().message).toBe('The keys to verify the bearer token are unavailable');
    expect(res.text).not.toMatch(/127\.0\.0\.1|fetch/);
    expect(handled).toEqual([]);
  });
});
