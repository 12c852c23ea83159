// The chat page: a plain WebSocket speaking Azure Web PubSub's json.webpubsub.azure.v1 protocol.
const $ = (id) => document.getElementById(id);
const state = {
  socket: null,
  ackId: 0,
  pending: new Map(),
  me: '',
  room: 'lobby',
  rooms: ['lobby'],
  users: new Set(),
  messages: {},
  typing: new Map(),
};

$('sign-in').addEventListener('submit', async (event) => {
  event.preventDefault();
  $('sign-in-error').textContent = '';
  const name = $('name').value.trim();
  const response = await fetch(`/negotiate?name=${encodeURIComponent(name)}`);
  const body = await response
    .json()
    .catch(() => ({ message: `Sign-in failed (${response.status})` }));
  if (!response.ok) {
    $('sign-in-error').textContent = body.message;
    return;
  }
  connect(body.url, name);
});

function connect(url, name) {
  const socket = new WebSocket(url, 'json.webpubsub.azure.v1');
  state.socket = socket;
  $('status').textContent = 'Connecting…';
  socket.addEventListener('message', (event) => onFrame(JSON.parse(event.data)));
  socket.addEventListener('close', () => {
    $('status').textContent = state.me ? `Disconnected (${state.me})` : 'Could not connect';
    if (!state.me) $('sign-in-error').textContent = 'The server refused the connection.';
    // Nothing can be sent any more: say so instead of failing silently.
    for (const form of [$('send'), $('join')]) {
      for (const control of form.elements) control.disabled = true;
    }
    if (state.me) $('chat-error').textContent = 'Disconnected. Reload the page to sign in again.';
    for (const resolve of state.pending.values()) resolve(undefined);
    state.pending.clear();
  });
  state.me = '';
  state.pendingName = name;
}

/** Sends a user event and resolves with the server's reply (sent before the ack). */
function sendEvent(name, data) {
  if (state.socket?.readyState !== WebSocket.OPEN) return Promise.resolve(undefined);
  const ackId = ++state.ackId;
  state.socket.send(JSON.stringify({ type: 'event', event: name, dataType: 'json', data, ackId }));
  return new Promise((resolve) => state.pending.set(ackId, resolve));
}

let lastReply;
function onFrame(frame) {
  if (frame.type === 'system' && frame.event === 'connected') {
    state.me = frame.userId;
    $('status').textContent = `Signed in as ${state.me}`;
    $('sign-in').hidden = true;
    $('chat').hidden = false;
    $('text').focus();
  } else if (frame.type === 'message' && frame.from === 'server') {
    // A reply to our own event arrives just before its ack; pushes from the app come the same way.
    if (frame.data && frame.data.type) onServerMessage(frame.data);
    else lastReply = frame.data;
  } else if (frame.type === 'ack') {
    const resolve = state.pending.get(frame.ackId);
    state.pending.delete(frame.ackId);
    resolve?.(lastReply);
    lastReply = undefined;
  } else if (frame.type === 'message' && frame.from === 'group') {
    onServerMessage(frame.data);
  }
}

function onServerMessage(message) {
  switch (message.type) {
    case 'welcome':
      state.users = new Set(message.users);
      renderUsers();
      renderRooms();
      break;
    case 'presence':
      if (message.online) state.users.add(message.user);
      else state.users.delete(message.user);
      renderUsers();
      addLine('lobby', {
        notice: `${message.user} ${message.online ? 'is online' : 'went offline'}`,
      });
      break;
    case 'message':
      state.typing.delete(`${message.room}:${message.from}`);
      addLine(message.room, { from: message.from, text: message.text });
      renderTyping();
      break;
    case 'joined':
    case 'left':
      if (message.user !== state.me)
        addLine(message.room, { notice: `${message.user} ${message.type} #${message.room}` });
      break;
    case 'typing': {
      const key = `${message.room}:${message.user}`;
      clearTimeout(state.typing.get(key));
      state.typing.set(
        key,
        setTimeout(() => {
          state.typing.delete(key);
          renderTyping();
        }, 3000),
      );
      renderTyping();
      break;
    }
  }
}

function addLine(room, line) {
  (state.messages[room] ??= []).push(line);
  if (room === state.room) renderMessages();
}

function renderMessages() {
  const list = $('messages');
  list.replaceChildren(
    ...(state.messages[state.room] ?? []).map((line) => {
      const item = document.createElement('li');
      if (line.notice) {
        item.className = 'notice';
        item.textContent = line.notice;
      } else {
        const from = document.createElement('span');
        from.className = 'from';
        from.textContent = line.from;
        item.append(from, document.createTextNode(line.text));
      }
      return item;
    }),
  );
  list.scrollTop = list.scrollHeight;
}

function renderUsers() {
  $('users').replaceChildren(
    ...[...state.users]
      .sort()
      .map((user) => Object.assign(document.createElement('li'), { textContent: user })),
  );
}

function renderRooms() {
  $('rooms').replaceChildren(
    ...state.rooms.map((room) => {
      const item = document.createElement('li');
      item.textContent = `#${room}`;
      item.className = room === state.room ? 'active' : '';
      item.addEventListener('click', () => selectRoom(room));
      if (room !== 'lobby') {
        const leave = Object.assign(document.createElement('button'), {
          textContent: '×',
          title: `Leave #${room}`,
        });
        leave.addEventListener('click', async (event) => {
          event.stopPropagation();
          const reply = await sendEvent('leave', { room });
          if (!reply?.rooms) return;
          state.rooms = reply.rooms;
          if (state.room === room) selectRoom('lobby');
          else renderRooms();
        });
        item.append(leave);
      }
      return item;
    }),
  );
}

function renderTyping() {
  const who = [...state.typing.keys()]
    .filter((key) => key.startsWith(`${state.room}:`))
    .map((key) => key.slice(state.room.length + 1));
  $('typing').textContent = who.length
    ? `${who.join(', ')} ${who.length > 1 ? 'are' : 'is'} typing…`
    : '';
}

function selectRoom(room) {
  state.room = room;
  $('room-title').textContent = `#${room}`;
  renderRooms();
  renderMessages();
  renderTyping();
}

$('join').addEventListener('submit', async (event) => {
  event.preventDefault();
  const room = $('room-name').value.trim().toLowerCase();
  if (!/^[a-z0-9][a-z0-9-]{0,31}$/.test(room)) {
    $('chat-error').textContent = 'Room names are lower-case letters, digits and dashes.';
    return;
  }
  $('chat-error').textContent = '';
  const reply = await sendEvent('join', { room });
  if (!reply?.rooms) {
    $('chat-error').textContent = `Could not join #${room}.`;
    return;
  }
  state.rooms = reply.rooms;
  $('room-name').value = '';
  selectRoom(room);
});

$('send').addEventListener('submit', async (event) => {
  event.preventDefault();
  const text = $('text').value.trim();
  if (!text) return;
  $('text').value = '';
  const reply = await sendEvent('say', { room: state.room, text });
  $('chat-error').textContent = reply?.error ?? '';
});

let lastTyping = 0;
$('text').addEventListener('input', () => {
  if (Date.now() - lastTyping < 1500 || state.socket?.readyState !== WebSocket.OPEN) return;
  lastTyping = Date.now();
  state.socket.send(
    JSON.stringify({
      type: 'event',
      event: 'typing',
      dataType: 'json',
      data: { room: state.room },
    }),
  );
});
