/** Metadata keys and tokens, namespaced and defined once. */
export const HUB_METADATA = 'web-pubsub:hub';
export const HANDLER_METADATA = 'web-pubsub:handlers';
export const ARGS_METADATA = 'web-pubsub:args';

/** The `ExecutionContext.getType()` of a handler call, for guards and interceptors. */
export const WEB_PUBSUB_CONTEXT_TYPE = 'webpubsub';

/** Resolved, validated configuration shared by the guard, the controller and the hub clients. */
export const WEB_PUBSUB_CONFIG = Symbol('WEB_PUBSUB_CONFIG');

/** The upstream path (a synchronous extra of `forRoot`). */
export const WEB_PUBSUB_PATH = Symbol('WEB_PUBSUB_PATH');

/** The controller class made for this module instance. */
export const WEB_PUBSUB_CONTROLLER = Symbol('WEB_PUBSUB_CONTROLLER');

export const DEFAULT_PATH = '/eventhandler';

/**
 * Parameter types for `@EventData()` and `@EventContext()`. The payload uses Nest's
 * `RouteParamtypes.BODY` value (3) so that pipes such as `ValidationPipe` treat it as a body and
 * validate it; any other type reaches them as `custom` and is passed through unchecked.
 */
export const EVENT_DATA_PARAM = 3;
export const EVENT_CONTEXT_PARAM = 1000;
