/**
 * Microsoft Entra ID bearer tokens on upstream requests: when the event handler is set to
 * authenticate with the service's managed identity, every POST carries
 * `Authorization: Bearer <JWT>` issued for the configured audience.
 */
import { createRemoteJWKSet, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose';

export interface EntraAuthOptions {
  /** The `aud` the token is issued for: the application ID or URI chosen in the event handler settings. */
  audience: string | string[];
  /** Your tenant: accepts its v1 (`https://sts.windows.net/<tid>/`) and v2 issuers, keys from its JWKS. */
  tenantId?: string;
  /** Accepted issuer(s), instead of or on top of `tenantId`. */
  issuer?: string | string[];
  /** The object ids (`oid`) of the Web PubSub resource's managed identity; any caller of the tenant if unset. */
  allowedObjectIds?: string[];
  /** Where the signing keys are. Default: the tenant's, or the issuer's OpenID configuration. */
  jwksUri?: string;
  /** Allowed clock difference for `exp`/`nbf`, in seconds. Default 60. */
  clockToleranceSeconds?: number;
  /** The least time between two fetches of the keys when a token names an unknown key. Default 30. */
  jwksCooldownSeconds?: number;
}

/** A token that fails verification; the message says why and is safe to send back. */
export class EntraAuthError extends Error {
  override name = 'EntraAuthError';
}

/** The signing keys could not be fetched: the caller is not at fault (answered 503). */
export class EntraKeysUnavailableError extends Error {
  override name = 'EntraKeysUnavailableError';
}

const TOKEN_CACHE_SIZE = 1000;

/** Entra's issuers for a tenant: v1 and v2 access tokens. */
export const tenantIssuers = (tenantId: string): string[] => [
  `https://sts.windows.net/${tenantId}/`,
  `https://login.microsoftonline.com/${tenantId}/v2.0`,
];

/** Checks the options once at start-up; throws a message naming what is missing. */
export function validateEntraOptions(options: EntraAuthOptions): void {
  const audiences = [options.audience].flat().filter(Boolean);
  if (audiences.length === 0) throw new TypeError('auth.entra.audience is required');
  if (!options.tenantId && !options.issuer) {
    throw new TypeError('auth.entra needs "tenantId" or "issuer"');
  }
  if (options.jwksUri && !URL.canParse(options.jwksUri)) {
    throw new TypeError(`auth.entra.jwksUri "${options.jwksUri}" is not a URL`);
  }
}

/**
 * Builds a verifier for `Authorization` header values. Keys are fetched once and cached by jose,
 * which fetches them again when a token names an unknown `kid` (key rotation). Tokens already
 * verified are remembered until they expire: the service reuses one token for many requests.
 */
export function createEntraVerifier(
  options: EntraAuthOptions,
  fetchKeys: typeof fetch = fetch,
): (authorization: string | undefined) => Promise<JWTPayload> {
  validateEntraOptions(options);
  const issuers = [
    ...(options.tenantId ? tenantIssuers(options.tenantId) : []),
    ...[options.issuer ?? []].flat(),
  ];
  const allowedObjectIds = options.allowedObjectIds && new Set(options.allowedObjectIds);
  const verified = new Map<string, { payload: JWTPayload; expiresAt: number }>();
  let keys: Promise<JWTVerifyGetKey> | undefined;

  const getKeys = () =>
    (keys ??= resolveJwksUri(options, fetchKeys)
      .then((uri) =>
        createRemoteJWKSet(new URL(uri), {
          cooldownDuration: (options.jwksCooldownSeconds ?? 30) * 1000,
        }),
      )
      .catch((err: unknown) => {
        keys = undefined; // try again on the next request
        throw err;
      }));

  return async (authorization) => {
    const token = /^Bearer +(\S+)$/i.exec(authorization ?? '')?.[1];
    if (!token) throw new EntraAuthError('Missing bearer token');
    const cached = verified.get(token);
    if (cached && cached.expiresAt > Date.now()) return cached.payload;

    let getKey: JWTVerifyGetKey;
    try {
      getKey = await getKeys();
    } catch (err) {
      throw new EntraKeysUnavailableError((err as Error).message);
    }
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, getKey, {
        audience: options.audience,
        issuer: issuers,
        // Entra signs access tokens with RS256; any other algorithm is refused.
        algorithms: ['RS256'],
        clockTolerance: options.clockToleranceSeconds ?? 60,
        requiredClaims: ['exp'],
      }));
    } catch (err) {
      if (isKeyFetchFailure(err)) throw new EntraKeysUnavailableError((err as Error).message);
      throw new EntraAuthError(`Invalid bearer token: ${(err as Error).message}`);
    }
    if (allowedObjectIds && !allowedObjectIds.has(String(payload.oid))) {
      throw new EntraAuthError('Invalid bearer token: the caller is not an allowed identity');
    }
    if (verified.size >= TOKEN_CACHE_SIZE) verified.delete(verified.keys().next().value!);
    verified.set(token, { payload, expiresAt: payload.exp! * 1000 });
    return payload;
  };
}

/** jose's errors for a key set it could not fetch or read, as opposed to a bad token. */
const isKeyFetchFailure = (err: unknown) =>
  ['ERR_JWKS_TIMEOUT', 'ERR_JOSE_GENERIC', 'ERR_JWKS_INVALID'].includes(
    (err as { code?: string }).code ?? '',
  ) ||
  (err instanceof TypeError && /fetch/i.test(err.message));

async function resolveJwksUri(options: EntraAuthOptions, fetchKeys: typeof fetch): Promise<string> {
  if (options.jwksUri) return options.jwksUri;
  if (options.tenantId) {
    return `https://login.microsoftonline.com/${options.tenantId}/discovery/v2.0/keys`;
  }
  const issuer = [options.issuer!].flat()[0]!.replace(/\/+$/, '');
  const response = await fetchKeys(`${issuer}/.well-known/openid-configuration`);
  const document = (await response.json()) as { jwks_uri?: string };
  if (!response.ok || !document.jwks_uri) {
    throw new Error(`no jwks_uri in the OpenID configuration of ${issuer}`);
  }
  return document.jwks_uri;
}
