/** Start-up errors and the messages of every answer the module writes itself, in one place. */

/** Thrown while the application starts when the module or a handler class is misconfigured. */
export class WebPubSubConfigurationError extends Error {
  override name = 'WebPubSubConfigurationError';
}

export const Messages = {
  missingCredentials:
    'WebPubSubModule needs a "connectionString", or an "endpoint" with a "credential" (AzureKeyCredential or a TokenCredential).',
  bothCredentials:
    'WebPubSubModule: give either "connectionString" or "endpoint" + "credential", not both.',
  noAccessKey:
    'WebPubSubModule: with a TokenCredential there is no access key to verify ce-signature with. Set "accessKeys" to the keys of the Web PubSub resource, or to [] to turn the signature check off (only behind another authentication).',
  invalidEndpoint: (endpoint: string) =>
    `WebPubSubModule: "endpoint" must be an http(s) URL, got "${endpoint}".`,
  invalidMaxBodySize: (value: unknown) =>
    `WebPubSubModule: "maxBodySize" must be a positive number of bytes, got ${String(value)}.`,
  invalidDuration: (name: string, value: unknown) =>
    `WebPubSubModule: "${name}" must be a number of milliseconds from 0 to 2147483647, got ${String(value)}.`,
  invalidAllowedEndpoint: (value: string) =>
    `WebPubSubModule: "allowedEndpoints" entry "${value}" is not a host name or URL.`,
  signatureCheckOff:
    'WebPubSubModule: "accessKeys" is empty, so ce-signature is not verified. Anyone who can reach the upstream URL can send events.',
  duplicateHandler: (hub: string, event: string, first: string, second: string) =>
    `Two handlers for the event "${event}" of hub "${hub}": ${first} and ${second}. Keep one.`,
  notStatic: (name: string) =>
    `${name} is a @WebPubSubHub class but is request-scoped (or depends on a request-scoped provider); its handlers are skipped. Make it a singleton and resolve request-scoped services inside the handler.`,
  missingValidator: (handler: string) =>
    `${handler} takes a DTO class in @EventData(), which needs the packages "class-validator" and "class-transformer". Install them, or set "validation: false" in WebPubSubModule's options.`,

  nestTooOld:
    'WebPubSubModule needs HttpAdapterHost.init$, which @nestjs/core has from 11.1.10 on: please upgrade @nestjs/core.',

  missingHeaders: (names: readonly string[]) =>
    `Missing CloudEvents header${names.length > 1 ? 's' : ''}: ${names.join(', ')}`,
  badSpecVersion: (value: string) => `Unsupported ce-specversion "${value}", expected "1.0"`,
  unknownType: (value: string) => `Unknown ce-type "${value}"`,
  unknownHub: (hub: string) => `No handlers are registered for hub "${hub}"`,
  badSignature: 'Invalid or missing ce-signature',
  missingOrigin: 'Missing WebHook-Request-Origin header',
  originNotAllowed: (origins: readonly string[]) =>
    `None of the request origins (${origins.join(', ')}) is an allowed Web PubSub endpoint`,
  bodyTooLarge: (limit: number) => `Request body is larger than ${limit} bytes`,
  bodyAborted: 'Request body could not be read',
  bodyAlreadyParsed:
    'The upstream request body was parsed before WebPubSubModule could read it (is a body parser registered for this path before the module?)',
  internal: 'Internal server error',
  handlerTimeout: 'The event handler did not answer in time',
  shuttingDown: 'The application is shutting down',
  entraKeysUnavailable: 'The keys to verify the bearer token are unavailable',
  entraAnyCaller:
    'WebPubSubModule: auth.entra has no "allowedObjectIds", so a token of any identity of the tenant for this audience is accepted. List the object id of the Web PubSub resource\'s managed identity.',
  badSubprotocol: (value: string, offered: readonly string[]) =>
    `the connect handler chose subprotocol "${value}", which the client did not offer (${offered.join(', ') || 'none'})`,
} as const;
