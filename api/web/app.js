// baedal web front end: one dependency-free ES module, hash-routed.
// Views: #/login, #/shops, #/shop/<id>, #/order/<id> (customer), #/owner, #/rider.

// ---------------------------------------------------------------- labels
const DICT = {
  ko: {
    langToggle: 'English', logout: '로그아웃', login: '로그인', username: '아이디', password: '비밀번호',
    loginHint: '데모 계정: customer1, customer2, owner1, owner2, rider1 … rider6 — 비밀번호는 모두 demo',
    role_customer: '고객', role_owner: '사장님', role_rider: '라이더',
    shops: '가게 목록', menu: '메뉴', add: '담기', cart: '장바구니', cartEmpty: '장바구니가 비어 있습니다.',
    total: '합계', won: '{n}원', address: '배달 주소', lat: '위도', lon: '경도', phone: '전화번호',
    paymentToken: '결제 수단', tok_ok: '테스트 카드 (승인)', tok_declined: '테스트 카드 (거절)',
    placeOrder: '주문하고 결제하기', placing: '결제 중…', back: '← 가게 목록',
    myOrders: '내 주문', noOrders: '주문 내역이 없습니다.', order: '주문', items: '메뉴',
    status: '상태', readyAt: '조리 완료 예정', rider: '라이더', reason: '사유', refund: '환불',
    history: '진행 기록', cancelOrder: '주문 취소', cancelled: '주문이 취소되었습니다.',
    notifications: '알림', noNotifications: '알림이 없습니다.',
    shopOrders: '주문 관리', filter: '상태 필터', all: '전체', noShopOrders: '주문이 없습니다.',
    cookMinutes: '조리 시간(분)', accept: '접수', reject: '거절', rejectReason: '거절 사유',
    markReady: '조리 완료', cookRange: '조리 시간은 1~180분 사이로 입력하세요.',
    reasonRequired: '거절 사유를 입력하세요.',
    myLocation: '내 위치', available: '배달 가능', saveLocation: '위치 저장', locationSaved: '위치를 저장했습니다.', useMyPosition: '현재 위치 사용', map: '지도', you: '나', positionUnavailable: '현재 위치를 알 수 없습니다. 직접 입력하세요.',
    offers: '배차 요청', noOffers: '배차 요청이 없습니다.', distance: '거리', expiresIn: '남은 시간 {s}초',
    expired: '만료됨', decline: '거절', assigned: '배차가 확정되었습니다.',
    deliveries: '내 배달', noDeliveries: '배달이 없습니다.', shop: '가게', pickup: '픽업 완료',
    complete: '배달 완료', deliverTo: '배달지',
    networkError: '서버에 연결할 수 없습니다', sessionExpired: '로그인이 만료되었습니다. 다시 로그인하세요.',
    declined: '결제가 거절되었습니다.', payBusy: '결제 시스템이 혼잡합니다. {s}초 후에 다시 시도하세요.',
    payBusyShort: '결제 시스템이 혼잡합니다. 잠시 후 다시 시도하세요.', refused: '요청이 거부되었습니다.',
    streamLost: '실시간 연결이 끊어졌습니다. 다시 연결하는 중…', loading: '불러오는 중…', dismiss: '닫기',
    status_PAID: '결제 완료', status_ACCEPTED: '주문 접수', status_RIDER_ASSIGNED: '라이더 배정',
    status_DELIVERY_STARTED: '배달 시작', status_PICKED_UP: '픽업 완료', status_DELIVERED: '배달 완료',
    status_REJECTED: '주문 거절', status_CANCELLED: '주문 취소',
  },
  en: {
    langToggle: '한국어', logout: 'Log out', login: 'Log in', username: 'Username', password: 'Password',
    loginHint: 'Demo users: customer1, customer2, owner1, owner2, rider1 … rider6 — password: demo',
    role_customer: 'Customer', role_owner: 'Owner', role_rider: 'Rider',
    shops: 'Shops', menu: 'Menu', add: 'Add', cart: 'Cart', cartEmpty: 'Your cart is empty.',
    total: 'Total', won: '{n}원', address: 'Delivery address', lat: 'Latitude', lon: 'Longitude', phone: 'Phone',
    paymentToken: 'Payment method', tok_ok: 'Test card (approves)', tok_declined: 'Test card (declines)',
    placeOrder: 'Place order and pay', placing: 'Paying…', back: '← Shops',
    myOrders: 'My orders', noOrders: 'No orders yet.', order: 'Order', items: 'Items',
    status: 'Status', readyAt: 'Ready at', rider: 'Rider', reason: 'Reason', refund: 'Refund',
    history: 'History', cancelOrder: 'Cancel order', cancelled: 'The order was cancelled.',
    notifications: 'Notifications', noNotifications: 'No notifications.',
    shopOrders: 'Shop orders', filter: 'Status filter', all: 'All', noShopOrders: 'No orders.',
    cookMinutes: 'Cooking minutes', accept: 'Accept', reject: 'Reject', rejectReason: 'Reason for rejecting',
    markReady: 'Mark ready', cookRange: 'Cooking time must be 1 to 180 minutes.',
    reasonRequired: 'Please enter a reason.',
    myLocation: 'My location', available: 'Available', saveLocation: 'Save location', locationSaved: 'Location saved.', useMyPosition: 'Use my position', map: 'Map', you: 'you', positionUnavailable: 'Your position is not available; enter it by hand.',
    offers: 'Offers', noOffers: 'No offers.', distance: 'Distance', expiresIn: '{s}s left',
    expired: 'Expired', decline: 'Decline', assigned: 'Delivery assigned to you.',
    deliveries: 'My deliveries', noDeliveries: 'No deliveries.', shop: 'Shop', pickup: 'Picked up',
    complete: 'Delivered', deliverTo: 'Deliver to',
    networkError: 'Cannot reach the server', sessionExpired: 'Your session expired. Please log in again.',
    declined: 'Payment declined.', payBusy: 'Payment is busy. Try again in {s} seconds.',
    payBusyShort: 'Payment is busy. Try again shortly.', refused: 'Request refused.',
    streamLost: 'Live updates interrupted, reconnecting…', loading: 'Loading…', dismiss: 'Dismiss',
    status_PAID: 'Paid', status_ACCEPTED: 'Accepted', status_RIDER_ASSIGNED: 'Rider assigned',
    status_DELIVERY_STARTED: 'Delivery started', status_PICKED_UP: 'Picked up', status_DELIVERED: 'Delivered',
    status_REJECTED: 'Rejected', status_CANCELLED: 'Cancelled',
  },
};
const STATUSES = ['PAID', 'ACCEPTED', 'RIDER_ASSIGNED', 'DELIVERY_STARTED', 'PICKED_UP', 'DELIVERED', 'REJECTED', 'CANCELLED'];
const STEPS = STATUSES.slice(0, 6);
const TERMINAL = new Set(['DELIVERED', 'REJECTED', 'CANCELLED']);

let lang = localStorage.getItem('baedal.lang') === 'en' ? 'en' : 'ko';
function t(key, vars = {}) {
  const s = DICT[lang][key] ?? DICT.ko[key] ?? key;
  return s.replace(/\{(\w+)\}/g, (_, k) => String(vars[k] ?? ''));
}
const statusLabel = (s) => DICT[lang]['status_' + s] ?? String(s);
// The order number people read aloud (B7K-42Q), as the server's
// baedal_workflows::order_no computes it: the id's first 30 bits in Crockford's base 32.
const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
function orderNo(id) {
  let bits = /^[0-9a-f]{8}/i.test(id) ? parseInt(id.slice(0, 8), 16) : null;
  if (bits === null) { // not a hex id: its FNV-1a hash, as on the server
    bits = 0x811c9dc5;
    for (const b of new TextEncoder().encode(id)) bits = Math.imul(bits ^ b, 0x01000193) >>> 0;
  }
  bits = bits >>> 2;
  let s = '';
  for (let i = 0; i < 6; i++) s += CROCKFORD[(bits >>> (25 - 5 * i)) & 31];
  return `${s.slice(0, 3)}-${s.slice(3)}`;
}
// "Order B7K-42Q" with the full id beside it, small, for support and receipts.
const orderTitle = (id) => [`${t('order')} `, h('span', { class: 'order-no', testid: `order-no-${id}` }, orderNo(id)),
  ' ', h('small', { class: 'order-id' }, id)];
const won = (n) => t('won', { n: Number(n ?? 0).toLocaleString('en-US') });
const time = (iso) => (iso ? new Date(iso).toLocaleTimeString(lang === 'ko' ? 'ko-KR' : 'en-GB') : '');
const meters = (m) => (m < 1000 ? `${Math.round(m)} m` : `${(m / 1000).toFixed(1)} km`);

// ---------------------------------------------------------------- order map
// The shop, the delivery address and the rider, drawn by the page itself (no
// map tiles, nothing from outside): an equirectangular sketch, north up, with
// the distances the server measured along the great circle.
const SVG_NS = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, ...kids) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v != null) el.setAttribute(k, v);
  for (const c of kids.flat()) if (c != null) el.append(c);
  return el;
}
function drawMap(m) {
  const W = 320, H = 180, PAD = 28;
  const spots = [
    { role: 'shop', label: t('shop'), lat: m.shop.lat, lon: m.shop.lon },
    { role: 'customer', label: t('deliverTo'), lat: m.customer.lat, lon: m.customer.lon },
    m.rider ? { role: 'rider', label: t('rider'), lat: m.rider.lat, lon: m.rider.lon } : null,
  ].filter(Boolean);
  const kx = Math.cos((spots.reduce((a, p) => a + p.lat, 0) / spots.length) * Math.PI / 180);
  const xs = spots.map((p) => p.lon * kx), ys = spots.map((p) => -p.lat);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const span = Math.max(x1 - x0, y1 - y0, 0.002); // at least ~200 m across
  const scale = Math.min((W - 2 * PAD) / Math.max(x1 - x0, span / 2), (H - 2 * PAD) / Math.max(y1 - y0, span / 2));
  const at = (p) => [W / 2 + (p.lon * kx - (x0 + x1) / 2) * scale, H / 2 + (-p.lat - (y0 + y1) / 2) * scale];
  const line = (a, b, cls) => { const [ax, ay] = at(a), [bx, by] = at(b); return svg('line', { x1: ax, y1: ay, x2: bx, y2: by, class: cls }); };
  const [shop, customer, rider] = spots;
  const picture = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': t('map') },
    line(shop, customer, 'route'),
    rider ? line(rider, shop, 'route rider-route') : null,
    spots.map((p) => {
      const [x, y] = at(p);
      return svg('g', { class: `spot spot-${p.role}`, 'data-role': p.role },
        svg('circle', { cx: x, cy: y, r: 7 }),
        // Labels above (shop), below (address) and beside (rider) their dots: places
        // that coincide (a rider at the shop's door) still show every name.
        p.role === 'rider'
          ? svg('text', { x: x + 11, y: y + 4, 'text-anchor': 'start' }, p.label)
          : svg('text', { x, y: p.role === 'customer' ? y + 20 : y - 11, 'text-anchor': 'middle' }, p.label));
    }));
  const parts = [`${t('shop')} → ${t('deliverTo')} ${meters(m.shopToCustomerM)}`];
  if (m.riderToShopM != null) parts.push(`${t('rider')} → ${t('shop')} ${meters(m.riderToShopM)}`);
  if (m.riderToCustomerM != null) parts.push(`${t('rider')} → ${t('deliverTo')} ${meters(m.riderToCustomerM)}`);
  return [picture, h('p', { class: 'map-distances' }, parts.join(' · '))];
}
// A map of one order that keeps itself current (every 5 s) while it is on the page.
function orderMap(orderId, alive) {
  const box = h('div', { class: 'map', testid: `map-${orderId}` });
  let timer = null;
  const load = async () => {
    if (!alive() || (timer && !box.isConnected)) { clearInterval(timer); return; }
    try {
      const res = await fetch(`/api/orders/${encodeURIComponent(orderId)}/map`, {
        headers: { Accept: 'application/json', Authorization: `Bearer ${session?.token}` } });
      if (!res.ok) return; // a map is a nicety: no error message for it
      const m = await res.json();
      if (alive()) { box.replaceChildren(...drawMap(m)); box.dataset.rider = m.rider ? 'shown' : 'none'; }
    } catch { /* offline for a moment: the next round draws it */ }
  };
  load();
  timer = setInterval(load, 5000);
  cleanups.push(() => clearInterval(timer));
  return box;
}

// ---------------------------------------------------------------- DOM helpers
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'testid') el.dataset.testid = v;
    else if (k === 'value' || k === 'checked') el[k] = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of kids.flat(Infinity)) if (c != null && c !== false) el.append(c instanceof Node ? c : String(c));
  return el;
}
const badge = (status, testid) =>
  h('span', { class: 'badge s-' + String(status).toLowerCase(), 'data-status': status, testid }, statusLabel(status));
const field = (label, input) => h('label', { class: 'field' }, h('span', null, label), input);
const section = (title, ...kids) => h('section', { class: 'card' }, h('h2', null, title), ...kids);
const $ = (sel, root = document) => root.querySelector(sel);

// Items in read models are not fully specified; show a name when given, else the menu id.
const itemsText = (items) =>
  (items || []).map((i) => `${i.name ?? i.menuName ?? '#' + (i.menuId ?? i.id)} × ${i.quantity ?? i.qty ?? 1}`).join(', ');
const addrText = (a) => (a == null ? '' : typeof a === 'string' ? a : a.text ?? `${a.lat}, ${a.lon}`);
const riderText = (r) => (r == null ? '' : typeof r === 'object' ? r.name ?? r.username ?? r.id ?? JSON.stringify(r) : String(r));

// ---------------------------------------------------------------- messages
const msgBox = () => $('#message');
function showMessage(text, kind = 'error') {
  const box = msgBox();
  box.dataset.kind = kind;
  box.replaceChildren(h('span', { testid: 'message-text' }, text),
    h('button', { type: 'button', class: 'ghost small', testid: 'message-dismiss', onclick: clearMessage }, t('dismiss')));
  box.hidden = false;
}
const showError = (text) => showMessage(text, 'error');
function clearMessage() { msgBox().hidden = true; msgBox().replaceChildren(); }

function showProblem(res, p) {
  const title = p && typeof p === 'object' ? p.title : null;
  const detail = p && typeof p === 'object' ? p.detail : typeof p === 'string' ? p : null;
  let lead = `${res.status} ${title || res.statusText || t('refused')}`;
  if (res.status === 402) lead = t('declined');
  if (res.status === 503) {
    const s = res.headers.get('Retry-After');
    lead = s ? t('payBusy', { s }) : t('payBusyShort');
  }
  showError([lead, detail].filter(Boolean).join(' — '));
}

// ---------------------------------------------------------------- session + API
let session = JSON.parse(sessionStorage.getItem('baedal.session') || 'null');

async function api(method, path, body, headers = {}) {
  const hdrs = { Accept: 'application/json, application/problem+json', ...headers };
  if (session) hdrs.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) hdrs['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch('/api' + path, { method, headers: hdrs, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    showError(`${t('networkError')} (${e.message})`);
    return { ok: false, status: 0, data: null };
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!res.ok) {
    if (res.status === 401 && path !== '/auth/login') {
      if (session) { logout(); showError(t('sessionExpired')); } // later 401s of the same moment add nothing
    } else showProblem(res, data);
  }
  return { ok: res.ok, status: res.status, data, headers: res.headers };
}

function logout() {
  session = null;
  sessionStorage.removeItem('baedal.session');
  cart = null;
  if (location.hash === '#/login') render(); else location.hash = '#/login';
}

// crypto.randomUUID exists only in secure contexts (https or localhost); fall back for plain-http LAN use.
function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40; b[8] = (b[8] & 0x3f) | 0x80;
  const x = [...b].map((v) => v.toString(16).padStart(2, '0')).join('');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

// ---------------------------------------------------------------- view lifecycle
// Every render tears down the previous view's timers/streams; async results check alive() before touching the DOM.
let cleanups = [];
let generation = 0;
function every(ms, fn) {
  let busy = false; // a slow server must not pile up overlapping polls
  const run = async () => {
    if (busy) return;
    busy = true;
    try { await fn(); } finally { busy = false; }
  };
  run();
  const id = setInterval(run, ms);
  cleanups.push(() => clearInterval(id));
}

function render() {
  cleanups.forEach((f) => f());
  cleanups = [];
  const gen = ++generation;
  const alive = () => gen === generation;
  document.documentElement.lang = lang;
  $('#lang-toggle').textContent = t('langToggle');
  $('#logout').textContent = t('logout');
  $('#logout').hidden = !session;
  $('#whoami').textContent = session ? `${session.username ?? ''} · ${t('role_' + session.role)}` : '';

  const [view, arg] = location.hash.replace(/^#\/?/, '').split('/');
  const main = $('#app');
  if (!session) return main.replaceChildren(loginView());
  const home = { customer: 'shops', owner: 'owner', rider: 'rider' }[session.role] || 'shops';
  const allowed = { customer: ['shops', 'shop', 'order'], owner: ['owner'], rider: ['rider'] }[session.role] || [];
  if (!allowed.includes(view)) { location.hash = '#/' + home; return; }
  const views = { shops: shopsView, shop: shopView, order: orderView, owner: ownerView, rider: riderView };
  main.replaceChildren(views[view](arg, alive));
}

// ---------------------------------------------------------------- login
function loginView() {
  const user = h('input', { name: 'username', autocomplete: 'username', testid: 'login-username', required: true });
  const pass = h('input', { name: 'password', type: 'password', autocomplete: 'current-password', testid: 'login-password', required: true });
  const submit = h('button', { type: 'submit', class: 'primary', testid: 'login-submit' }, t('login'));
  const form = h('form', { class: 'card', testid: 'login-form' },
    h('h2', null, t('login')), field(t('username'), user), field(t('password'), pass), submit,
    h('p', { class: 'hint', testid: 'login-hint' }, t('loginHint')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    submit.disabled = true;
    const r = await api('POST', '/auth/login', { username: user.value.trim(), password: pass.value });
    submit.disabled = false;
    if (!r.ok) return;
    session = { ...r.data, username: user.value.trim() };
    sessionStorage.setItem('baedal.session', JSON.stringify(session));
    clearMessage();
    render(); // stays on a deep link (e.g. #/order/7) the role may open, else goes to the role's home
  });
  return form;
}

// ---------------------------------------------------------------- notifications (all roles)
function notificationsPanel(alive) {
  const list = h('ul', { class: 'feed', testid: 'notifications' });
  let last = '';
  every(3000, async () => {
    const r = await api('GET', '/notifications');
    if (!alive() || !r.ok) return;
    const sig = JSON.stringify(r.data);
    if (sig === last) return;
    last = sig;
    const items = [...(r.data || [])].sort((a, b) => String(b.at).localeCompare(String(a.at))).slice(0, 30);
    list.replaceChildren(...(items.length ? items.map((n) =>
      h('li', { testid: 'notification', 'data-status': n.status, 'data-order': n.orderId },
        h('time', null, time(n.at)), ' ', badge(n.status), ' ', n.text)) : [h('li', { class: 'empty' }, t('noNotifications'))]));
  });
  return section(t('notifications'), list);
}

// Keyed list refresh: only rebuild an entry whose data changed, so inputs keep focus and typed values.
function syncList(list, rows, key, build, emptyText) {
  const old = new Map([...list.children].map((el) => [el.dataset.key, el]));
  const next = rows.map((row) => {
    const k = String(key(row)), sig = JSON.stringify(row), prev = old.get(k);
    if (prev && prev.dataset.sig === sig) return prev;
    const el = build(row);
    el.dataset.key = k;
    el.dataset.sig = sig;
    if (prev) for (const inp of prev.querySelectorAll('input[data-keep]')) {
      const mate = el.querySelector(`input[data-testid="${inp.dataset.testid}"]`);
      if (mate) mate.value = inp.value;
    }
    return el;
  });
  if (!next.length) {
    if (list.children.length === 1 && list.firstChild.classList.contains('empty')) return;
    next.push(h('li', { class: 'empty' }, emptyText));
  }
  const same = next.length === list.children.length && next.every((el, i) => list.children[i] === el);
  if (!same) list.replaceChildren(...next);
}

// ---------------------------------------------------------------- customer: shops + my orders
function shopsView(_, alive) {
  const shops = h('ul', { class: 'list', testid: 'shop-list' }, h('li', { class: 'empty' }, t('loading')));
  api('GET', '/shops').then((r) => {
    if (!alive() || !r.ok) return;
    shops.replaceChildren(...r.data.map((s) => h('li', null,
      h('a', { class: 'row-link', href: `#/shop/${s.id}`, testid: `shop-${s.id}` }, s.name))));
  });
  const orders = h('ul', { class: 'list', testid: 'my-orders' });
  every(3000, async () => {
    const r = await api('GET', '/orders');
    if (!alive() || !r.ok) return;
    syncList(orders, r.data || [], (o) => o.orderId, (o) => h('li', null,
      h('a', { class: 'row-link', href: `#/order/${o.orderId}`, testid: `my-order-${o.orderId}`, 'data-status': o.status },
        h('span', { class: 'grow' }, ...orderTitle(o.orderId), ` · ${won(o.total)}`), badge(o.status))), t('noOrders'));
  });
  return h('div', { class: 'stack' }, section(t('shops'), shops), section(t('myOrders'), orders), notificationsPanel(alive));
}

// ---------------------------------------------------------------- customer: menu, cart, checkout
let cart = null; // {shopId, lines: Map(menuId -> {menu, qty}), form: {...}, pending: {sig, key}}

function shopView(shopId, alive) {
  if (!cart || String(cart.shopId) !== String(shopId)) {
    cart = { shopId, lines: new Map(), pending: null,
      form: { text: '서울특별시 강남구 테헤란로 152', lat: '37.5000', lon: '127.0366', phone: '010-1234-5678', token: 'tok_ok' } };
  }
  const title = h('h2', null, t('menu'));
  const menu = h('ul', { class: 'list', testid: 'menu' }, h('li', { class: 'empty' }, t('loading')));
  const lines = h('ul', { class: 'list', testid: 'cart' });
  const total = h('strong', { testid: 'cart-total' });

  function paintCart() {
    const rows = [...cart.lines.values()].filter((l) => l.qty > 0);
    lines.replaceChildren(...(rows.length ? rows.map(({ menu: m, qty }) => h('li', { class: 'cart-line', testid: `cart-line-${m.id}` },
      h('span', { class: 'grow' }, m.name, h('br'), h('small', null, won(m.price * qty))),
      h('button', { type: 'button', class: 'qty', testid: `cart-dec-${m.id}`, 'aria-label': '-', onclick: () => bump(m, -1) }, '−'),
      h('span', { class: 'qty-n', testid: `cart-qty-${m.id}` }, qty),
      h('button', { type: 'button', class: 'qty', testid: `cart-inc-${m.id}`, 'aria-label': '+', onclick: () => bump(m, 1) }, '+')))
      : [h('li', { class: 'empty', testid: 'cart-empty' }, t('cartEmpty'))]));
    total.textContent = won(rows.reduce((sum, l) => sum + l.menu.price * l.qty, 0));
  }
  function bump(m, d) {
    const line = cart.lines.get(m.id) || { menu: m, qty: 0 };
    line.qty = Math.max(0, line.qty + d);
    if (line.qty) cart.lines.set(m.id, line); else cart.lines.delete(m.id);
    paintCart();
  }

  let shopRef = shopId; // the id exactly as the API spells it (number or string), once the shop list is in
  Promise.all([api('GET', '/shops'), api('GET', `/shops/${shopId}/menu`)]).then(([shops, r]) => {
    if (!alive()) return;
    const shop = shops.ok && shops.data.find((s) => String(s.id) === String(shopId));
    if (shop) { shopRef = shop.id; title.textContent = `${shop.name} — ${t('menu')}`; }
    if (!r.ok) return menu.replaceChildren();
    menu.replaceChildren(...r.data.map((m) => h('li', { class: 'menu-item', testid: `menu-item-${m.id}` },
      h('span', { class: 'grow' }, m.name, h('br'), h('small', null, won(m.price))),
      h('button', { type: 'button', class: 'primary', testid: `menu-add-${m.id}`, onclick: () => bump(m, 1) }, t('add')))));
  });

  const f = cart.form;
  const input = (key, testid, extra = {}) => h('input', { testid, value: f[key], oninput: (e) => { f[key] = e.target.value; }, ...extra });
  const token = h('select', { testid: 'payment-token', onchange: (e) => { f.token = e.target.value; } },
    ['tok_ok', 'tok_declined'].map((v) => h('option', { value: v, selected: f.token === v }, t(v))));
  const place = h('button', { type: 'submit', class: 'primary big', testid: 'place-order' }, t('placeOrder'));
  const form = h('form', { class: 'card', testid: 'checkout' },
    h('h2', null, t('address')),
    field(t('address'), input('text', 'addr-text', { autocomplete: 'street-address' })),
    h('div', { class: 'pair' },
      field(t('lat'), input('lat', 'addr-lat', { type: 'number', step: 'any', inputmode: 'decimal' })),
      field(t('lon'), input('lon', 'addr-lon', { type: 'number', step: 'any', inputmode: 'decimal' }))),
    field(t('phone'), input('phone', 'phone', { type: 'tel', autocomplete: 'tel' })),
    field(t('paymentToken'), token), place);

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const items = [...cart.lines.values()].filter((l) => l.qty > 0).map((l) => ({ menuId: l.menu.id, quantity: l.qty }));
    if (!items.length) return showError(t('cartEmpty'));
    const body = { shopId: shopRef, items,
      address: { text: f.text.trim(), lat: Number(f.lat), lon: Number(f.lon) }, phone: f.phone.trim(), paymentToken: f.token };
    // One Idempotency-Key per submission of this exact cart: re-submitting after a lost response reuses it (charged once);
    // any change to the cart/form, or a definite refusal from the server, starts a new submission with a new key.
    const sig = JSON.stringify(body);
    if (!cart.pending || cart.pending.sig !== sig) cart.pending = { sig, key: uuid() };
    place.disabled = true;
    place.textContent = t('placing');
    const r = await api('POST', '/orders', body, { 'Idempotency-Key': cart.pending.key });
    place.disabled = false;
    place.textContent = t('placeOrder');
    if (r.ok) {
      cart = null;
      clearMessage();
      location.hash = `#/order/${r.data.orderId}`;
    } else if (r.status !== 0) cart.pending = null;
  });

  paintCart();
  return h('div', { class: 'stack' },
    h('a', { href: '#/shops', class: 'back', testid: 'back-to-shops' }, t('back')),
    h('section', { class: 'card' }, title, menu),
    section(t('cart'), lines, h('p', { class: 'total' }, `${t('total')}: `, total)), form);
}

// ---------------------------------------------------------------- customer: one order, live
function orderView(orderId, alive) {
  const body = h('div', { class: 'card', testid: 'order-page' }, t('loading'));
  let info = null;

  function apply(next) {
    if (!alive() || !next) return;
    // Snapshots may arrive out of order (GET racing the stream): never step back from a terminal status or a longer history.
    if (info && TERMINAL.has(info.status) && !TERMINAL.has(next.status)) return;
    if (info && (next.history?.length ?? 0) < (info.history?.length ?? 0)) return;
    info = { ...info, ...next };
    paint();
  }
  const refetch = async () => { const r = await api('GET', `/orders/${orderId}`); if (r.ok) apply(r.data); };

  function paint() {
    const st = info.status;
    const idx = STEPS.indexOf(st);
    const steps = h('ol', { class: 'steps' + (idx < 0 ? ' off' : ''), testid: 'order-steps' }, STEPS.map((s, i) =>
      h('li', { class: i < idx ? 'done' : i === idx ? 'current' : '', 'data-status': s, testid: `step-${s}`,
        'aria-current': i === idx ? 'step' : null }, statusLabel(s))));
    const row = (label, value, testid) => h('div', { class: 'kv', testid }, h('span', null, label), h('span', null, value));
    body.replaceChildren(...[
      h('h2', null, ...orderTitle(info.orderId ?? orderId)),
      h('p', { class: 'status-line' }, `${t('status')}: `, badge(st, 'order-status')),
      TERMINAL.has(st) && st !== 'DELIVERED' ? null : steps,
      info.reason ? row(t('reason'), info.reason, 'order-reason') : null,
      info.refund ? h('div', { class: 'kv refund', testid: 'order-refund', 'data-refund-status': info.refund.status },
        h('span', null, t('refund')), h('span', null, `${won(info.refund.amount)} · ${info.refund.status ?? ''}`)) : null,
      row(t('items'), itemsText(info.items), 'order-items'),
      row(t('total'), won(info.total), 'order-total'),
      info.readyAt ? row(t('readyAt'), time(info.readyAt), 'order-ready-at') : null,
      info.rider ? row(t('rider'), riderText(info.rider), 'order-rider') : null,
      st === 'PAID' ? h('button', { type: 'button', class: 'danger big', testid: 'cancel-order', onclick: cancel }, t('cancelOrder')) : null,
      h('h3', null, t('history')),
      h('ul', { class: 'feed', testid: 'order-history' }, (info.history || []).map((e) =>
        h('li', null, h('time', null, time(e.at)), ' ', badge(e.status)))),
    ].filter(Boolean));
  }

  async function cancel(e) {
    e.target.disabled = true;
    const r = await api('POST', `/orders/${orderId}/cancel`);
    if (!alive()) return;
    e.target.disabled = false;
    if (r.ok) { showMessage(t('cancelled'), 'info'); apply({ ...r.data, history: info.history }); }
    refetch();
  }

  refetch();
  // EventSource cannot send an Authorization header: the stream is opened with a
  // short-lived ticket for this order's stream only, never the login token.
  let es = null;
  const follow = async () => {
    const r = await api('POST', `/orders/${encodeURIComponent(orderId)}/events/ticket`);
    if (!alive() || !r.ok || (info && TERMINAL.has(info.status))) return;
    es = new EventSource(`/api/orders/${encodeURIComponent(orderId)}/events?ticket=${encodeURIComponent(r.data.ticket)}`);
    es.onmessage = (ev) => {
      let next;
      try { next = JSON.parse(ev.data); } catch (err) { return showError(`SSE: ${err.message}`); }
      apply(next);
      // The server ends the stream after a final status; do not reconnect for nothing.
      if (TERMINAL.has(next.status)) es.close();
    };
    es.onopen = () => { if (msgBox().textContent.startsWith(t('streamLost'))) clearMessage(); };
    es.onerror = () => {
      if (!alive()) return;
      const live = info && !TERMINAL.has(info.status);
      if (es.readyState === EventSource.CONNECTING && live) showError(t('streamLost'));
      refetch(); // catch up on anything missed while the stream was down (and surface 401/404 as a message)
      // Given up (its ticket expired, say): follow again with a fresh ticket.
      if (es.readyState === EventSource.CLOSED && live) setTimeout(() => { if (alive()) follow(); }, 2000);
    };
  };
  follow();
  cleanups.push(() => { if (es) es.close(); });
  // A refund settles after the status change without a new status event; check a few times until it does.
  let refundChecks = 0;
  every(3000, () => {
    if (info && TERMINAL.has(info.status) && info.status !== 'DELIVERED' && (!info.refund || info.refund.status !== 'REFUNDED') && refundChecks++ < 20) refetch();
  });

  return h('div', { class: 'stack' }, h('a', { href: '#/shops', class: 'back', testid: 'back-to-shops' }, t('back')),
    body, section(t('map'), orderMap(orderId, alive)), notificationsPanel(alive));
}

// ---------------------------------------------------------------- owner
function ownerView(_, alive) {
  let filter = sessionStorage.getItem('baedal.ownerFilter') || '';
  const list = h('ul', { class: 'list orders', testid: 'owner-orders' });
  const title = h('h2', null, t('shopOrders'));
  api('GET', '/shops').then((r) => {
    const shop = alive() && r.ok && r.data.find((s) => String(s.id) === String(session.shopId));
    if (shop) title.textContent = `${shop.name} — ${t('shopOrders')}`;
  });
  const select = h('select', { testid: 'owner-status-filter', onchange: (e) => {
    filter = e.target.value; sessionStorage.setItem('baedal.ownerFilter', filter); refresh();
  } }, h('option', { value: '' }, t('all')), STATUSES.map((s) => h('option', { value: s, selected: s === filter }, statusLabel(s))));

  async function refresh() {
    const r = await api('GET', '/shop/orders' + (filter ? `?status=${encodeURIComponent(filter)}` : ''));
    if (!alive() || !r.ok) return;
    syncList(list, r.data || [], (o) => o.orderId, card, t('noShopOrders'));
  }
  async function act(btn, path, payload) {
    btn.disabled = true;
    const r = await api('POST', path, payload);
    btn.disabled = false;
    if (r.ok) clearMessage();
    refresh();
  }
  function card(o) {
    const id = o.orderId;
    const kv = (label, value, testid) => h('div', { class: 'kv', testid }, h('span', null, label), h('span', null, value));
    const actions = [];
    if (o.status === 'PAID') {
      const mins = h('input', { type: 'number', min: 1, max: 180, step: 1, value: '15', inputmode: 'numeric', testid: `cook-minutes-${id}`, 'data-keep': '' });
      const reason = h('input', { testid: `reject-reason-${id}`, placeholder: t('rejectReason'), 'data-keep': '' });
      actions.push(h('div', { class: 'act' }, field(t('cookMinutes'), mins),
        h('button', { type: 'button', class: 'primary', testid: `accept-${id}`, onclick: (e) => {
          const n = Number(mins.value);
          if (!Number.isInteger(n) || n < 1 || n > 180) return showError(t('cookRange'));
          act(e.target, `/shop/orders/${id}/accept`, { cookMinutes: n });
        } }, t('accept'))));
      actions.push(h('div', { class: 'act' }, field(t('rejectReason'), reason),
        h('button', { type: 'button', class: 'danger', testid: `reject-${id}`, onclick: (e) => {
          if (!reason.value.trim()) return showError(t('reasonRequired'));
          act(e.target, `/shop/orders/${id}/reject`, { reason: reason.value.trim() });
        } }, t('reject'))));
    }
    if (o.status === 'ACCEPTED' || o.status === 'RIDER_ASSIGNED') {
      actions.push(h('button', { type: 'button', class: 'primary big', testid: `ready-${id}`,
        onclick: (e) => act(e.target, `/shop/orders/${id}/ready`) }, t('markReady')));
    }
    return h('li', { class: 'order', testid: `owner-order-${id}`, 'data-status': o.status },
      h('div', { class: 'order-head' }, h('strong', null, ...orderTitle(id)), badge(o.status, `owner-order-status-${id}`)),
      kv(t('items'), itemsText(o.items)), kv(t('total'), won(o.total)), kv(t('address'), addrText(o.address)),
      o.readyAt ? kv(t('readyAt'), time(o.readyAt), `owner-ready-at-${id}`) : null,
      o.reason ? kv(t('reason'), o.reason, `owner-reason-${id}`) : null, actions,
      ownerMapToggle(id));
  }
  function ownerMapToggle(id) {
    const details = h('details', { class: 'map-toggle', testid: `owner-map-${id}` }, h('summary', null, t('map')));
    details.addEventListener('toggle', () => {
      if (details.open && details.children.length === 1) details.append(orderMap(id, alive));
    }, { once: false });
    return details;
  }

  every(1000, refresh);
  return h('div', { class: 'stack' },
    h('section', { class: 'card' }, title, field(t('filter'), select), list), notificationsPanel(alive));
}

// ---------------------------------------------------------------- rider
function riderView(_, alive) {
  const saved = JSON.parse(localStorage.getItem(`baedal.rider.${session.id}`) || 'null') || { lat: '37.4979', lon: '127.0276', available: true };
  const lat = h('input', { type: 'number', step: 'any', inputmode: 'decimal', value: saved.lat, testid: 'rider-lat' });
  const lon = h('input', { type: 'number', step: 'any', inputmode: 'decimal', value: saved.lon, testid: 'rider-lon' });
  const avail = h('input', { type: 'checkbox', checked: saved.available, testid: 'rider-available' });
  const save = h('button', { type: 'submit', class: 'primary', testid: 'rider-location-submit' }, t('saveLocation'));
  const locate = h('button', { type: 'button', class: 'ghost', testid: 'rider-use-position' }, t('useMyPosition'));
  const locForm = h('form', { class: 'card', testid: 'rider-location' }, h('h2', null, t('myLocation')),
    h('div', { class: 'pair' }, field(t('lat'), lat), field(t('lon'), lon)),
    h('label', { class: 'check' }, avail, h('span', null, t('available'))),
    h('div', { class: 'buttons' }, save, navigator.geolocation ? locate : null));
  const savedKey = `baedal.rider.${session.id}`;
  async function sendLocation(quiet) {
    const body = { lat: Number(lat.value), lon: Number(lon.value), available: avail.checked };
    const r = await api('PUT', '/rider/location', body);
    if (r.ok) {
      localStorage.setItem(savedKey, JSON.stringify({ lat: lat.value, lon: lon.value, available: avail.checked }));
      if (!quiet) showMessage(t('locationSaved'), 'info');
    }
    return r.ok;
  }
  locForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    save.disabled = true;
    await sendLocation(false);
    save.disabled = false;
  });
  // The browser's position, when the rider allows it; typing stays possible.
  // One request at a time (a watch beside it can starve a one-off request).
  const position = () => new Promise((resolve, reject) => navigator.geolocation.getCurrentPosition(
    resolve, reject, { enableHighAccuracy: true, timeout: 10000, maximumAge: 15000 }));
  const fill = (p) => {
    lat.value = p.coords.latitude.toFixed(6);
    lon.value = p.coords.longitude.toFixed(6);
  };
  let granted = false;
  navigator.permissions?.query({ name: 'geolocation' }).then((perm) => {
    granted = perm.state === 'granted';
    perm.onchange = () => { granted = perm.state === 'granted'; };
  }).catch(() => {});
  locate.addEventListener('click', async () => {
    locate.disabled = true;
    try {
      const p = await position();
      if (alive()) { fill(p); await sendLocation(false); }
    } catch {
      if (alive()) showMessage(t('positionUnavailable'));
    } finally { locate.disabled = false; }
  });
  // A rider who went available here reports again every 30 s while the page is
  // open (riders silent for RIDER_STALE_AFTER, 2 min, get no offers), from the
  // browser's position when allowed, else what was typed.
  every(30000, async () => {
    if (localStorage.getItem(savedKey) === null || !avail.checked) return;
    if (granted) {
      try { const p = await position(); if (alive()) fill(p); } catch { /* keep the last one */ }
    }
    if (alive()) await sendLocation(true);
  });

  const offers = h('ul', { class: 'list orders', testid: 'rider-offers' });
  const deliveries = h('ul', { class: 'list orders', testid: 'rider-deliveries' });
  const kv = (label, value, testid) => h('div', { class: 'kv', testid }, h('span', null, label), h('span', null, value));
  async function act(btn, path, okText) {
    btn.disabled = true;
    const r = await api('POST', path);
    btn.disabled = false;
    if (r.ok) { if (okText) showMessage(okText, 'info'); else clearMessage(); }
    refresh();
  }
  const offerCard = (o) => h('li', { class: 'order', testid: `rider-offer-${o.orderId}`, 'data-order': o.orderId },
    h('div', { class: 'order-head' }, h('strong', null, ...orderTitle(o.orderId)),
      h('span', { class: 'countdown', 'data-expires': o.expiresAt, testid: `offer-countdown-${o.orderId}` })),
    kv(t('shop'), o.shop?.name ?? ''), kv(t('distance'), meters(o.distanceM), `offer-distance-${o.orderId}`),
    h('div', { class: 'buttons' },
      h('button', { type: 'button', class: 'primary big', testid: `offer-accept-${o.orderId}`,
        onclick: (e) => act(e.target, `/rider/offers/${o.orderId}/accept`, t('assigned')) }, t('accept')),
      h('button', { type: 'button', class: 'ghost big', testid: `offer-decline-${o.orderId}`,
        onclick: (e) => act(e.target, `/rider/offers/${o.orderId}/decline`) }, t('decline'))));
  const deliveryCard = (d) => h('li', { class: 'order', testid: `delivery-${d.orderId}`, 'data-status': d.status },
    h('div', { class: 'order-head' }, h('strong', null, ...orderTitle(d.orderId)), badge(d.status, `delivery-status-${d.orderId}`)),
    kv(t('shop'), d.shop?.name ?? ''), kv(t('deliverTo'), addrText(d.address)),
    TERMINAL.has(d.status) ? null : orderMap(d.orderId, alive),
    d.readyAt ? kv(t('readyAt'), time(d.readyAt)) : null,
    d.status === 'DELIVERY_STARTED' ? h('button', { type: 'button', class: 'primary big', testid: `pickup-${d.orderId}`,
      onclick: (e) => act(e.target, `/rider/deliveries/${d.orderId}/pickup`) }, t('pickup')) : null,
    d.status === 'PICKED_UP' ? h('button', { type: 'button', class: 'primary big', testid: `complete-${d.orderId}`,
      onclick: (e) => act(e.target, `/rider/deliveries/${d.orderId}/complete`) }, t('complete')) : null);

  function tick() {
    for (const el of offers.querySelectorAll('[data-expires]')) {
      const s = Math.ceil((Date.parse(el.dataset.expires) - Date.now()) / 1000);
      el.textContent = s > 0 ? t('expiresIn', { s }) : t('expired');
      el.classList.toggle('late', s <= 5);
    }
  }
  async function refresh() {
    const [o, d] = await Promise.all([api('GET', '/rider/offers'), api('GET', '/rider/deliveries')]);
    if (!alive()) return;
    if (o.ok) syncList(offers, o.data || [], (x) => x.orderId, offerCard, t('noOffers'));
    if (d.ok) syncList(deliveries, d.data || [], (x) => x.orderId, deliveryCard, t('noDeliveries'));
    tick();
  }
  every(1000, refresh);
  const ticker = setInterval(tick, 250);
  cleanups.push(() => clearInterval(ticker));

  return h('div', { class: 'stack' }, section(t('offers'), offers), section(t('deliveries'), deliveries),
    locForm, notificationsPanel(alive));
}

// ---------------------------------------------------------------- boot
$('#lang-toggle').addEventListener('click', () => {
  lang = lang === 'ko' ? 'en' : 'ko';
  localStorage.setItem('baedal.lang', lang);
  render();
});
$('#logout').addEventListener('click', () => { clearMessage(); logout(); });
window.addEventListener('hashchange', render);
render();
