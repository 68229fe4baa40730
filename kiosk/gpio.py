"""The door's hardware through gpiozero: relay (door strike), status LED, enrol button.

On a Pi gpiozero picks its default pin factory (lgpio on Pi 5 / Bookworm);
pin factory ``mock`` (``kiosk run --simulate``, the demo, the tests) is
gpiozero's ``MockFactory``, so every device works without hardware.

Fail-secure: the relay is created switched off, :meth:`DoorHardware.lock`
switches it off, and :meth:`DoorHardware.close` switches it off before
releasing the pins. An error talking to the relay is re-raised after a
last attempt to switch it off. On Raspberry Pi OS a released output keeps
its last level, so after a crash :func:`switch_relay_off` (``kiosk
relay-off``, systemd's ``ExecStopPost``) drives it off from a fresh process.
"""

from __future__ import annotations

from dataclasses import dataclass

from kiosk.decision import Led
from kiosk.errors import HardwareError

# (on seconds, off seconds, blinks or None for forever); None = solid on.
LED_PATTERNS: dict[Led, tuple[float, float, int | None] | None] = {
    Led.IDLE: (0.05, 2.95, None),  # a short heartbeat: alive, nothing to do
    Led.FACE_SEEN: (0.15, 0.15, None),  # quick flicker: looking at you
    Led.GRANTED: None,  # solid: come in
    Led.DENIED: (0.5, 0.25, 3),  # three slow blinks: not you
    Led.ENROLLING: (0.6, 0.6, None),  # steady slow blink: hold still
    Led.LOCKED_OUT: (0.05, 0.2, None),  # fast strobe: wait
    Led.ERROR: (1.5, 0.3, None),  # mostly on with short gaps: needs attention
}


PIN_FACTORIES = ("auto", "mock", "lgpio", "rpigpio", "pigpio", "native")
"""gpiozero's pin factories by name: ``auto`` is gpiozero's own choice (lgpio on a
Pi 5 / Bookworm, or ``$GPIOZERO_PIN_FACTORY``); ``mock`` is its MockFactory (no
hardware: ``--simulate``, the demo, the tests)."""


@dataclass
class GpioSettings:
    """BCM GPIO numbers, the relay board's polarity and the pin factory (the ``[gpio]`` config section)."""

    relay_pin: int = 17
    relay_active_high: bool = False  # most opto-isolated relay boards switch on a LOW input
    led_pin: int = 27
    button_pin: int = 22
    pin_factory: str = "auto"  # one of PIN_FACTORIES; "mock" simulates the pins


def switch_relay_off(pin: int, active_high: bool, pin_factory=None) -> None:
    """Drive the relay input on ``pin`` to its off level and release it (it keeps that level).

    Only the relay is touched: a broken LED or button must not stop the door
    being locked.
    """
    from gpiozero import OutputDevice
    from gpiozero.exc import GPIOZeroError

    try:
        relay = OutputDevice(pin, active_high=active_high, initial_value=False, pin_factory=pin_factory)
        try:
            relay.off()
        finally:
            relay.close()
    except (GPIOZeroError, OSError, RuntimeError) as error:
        raise HardwareError(f"cannot drive the relay on GPIO {pin} off: {error}. Is python3-lgpio installed and the "
                            "user in the gpio group? Until this works, the strike may still be powered.") from error


def make_pin_factory(name: str):
    """The gpiozero pin factory called ``name`` (one of :data:`PIN_FACTORIES`), created now.

    Creating it here, not lazily inside gpiozero, turns gpiozero's string of
    fallback warnings on a machine without GPIO into one error that says
    what was tried and what to do.
    """
    import warnings

    from gpiozero import Device
    from gpiozero.exc import BadPinFactory, PinFactoryFallback

    if name not in PIN_FACTORIES:
        raise HardwareError(f"unknown pin factory {name!r} (known: {', '.join(PIN_FACTORIES)})")
    if name == "mock":
        from gpiozero.pins.mock import MockFactory

        return MockFactory()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PinFactoryFallback)
        try:
            if name == "auto":
                return Device._default_pin_factory()
            from importlib.metadata import entry_points

            (entry,) = entry_points(group="gpiozero_pin_factories", name=name)
            return entry.load()()
        except (BadPinFactory, ImportError, OSError, RuntimeError, ValueError) as error:
            tried = "; ".join(str(w.message) for w in caught if issubclass(w.category, PinFactoryFallback))
            raise HardwareError(
                f"no GPIO pin factory {name!r} on this machine ({tried or error}). On a Raspberry Pi install "
                "python3-lgpio (apt) and create the venv with --system-site-packages; elsewhere use --simulate "
                "(gpio.pin_factory = \"mock\")"
            ) from error


class DoorHardware:
    """Relay, LED and button, created together and released together."""

    def __init__(self, pins: GpioSettings | None = None, pin_factory=None, button_bounce: float = 0.05) -> None:
        from gpiozero import LED, Button, OutputDevice
        from gpiozero.exc import GPIOZeroError

        self.pins = pins = pins or GpioSettings()
        pin_factory = pin_factory or make_pin_factory(pins.pin_factory)
        self.pin_factory = pin_factory
        self.pattern: Led | None = None
        try:
            self.relay = OutputDevice(pins.relay_pin, active_high=pins.relay_active_high, initial_value=False, pin_factory=pin_factory)
            self.led = LED(pins.led_pin, pin_factory=pin_factory)
            self.button = Button(pins.button_pin, pull_up=True, bounce_time=button_bounce, pin_factory=pin_factory)
        except (GPIOZeroError, OSError, RuntimeError) as error:
            self._release_partial()
            raise HardwareError(
                f"cannot set up GPIO (relay {pins.relay_pin}, LED {pins.led_pin}, button {pins.button_pin}): {error}. "
                "Is this a Raspberry Pi with python3-lgpio installed, and is the user in the gpio group? "
                "Use --simulate to run without hardware."
            ) from error

    def _release_partial(self) -> None:
        for name in ("relay", "led", "button"):
            device = getattr(self, name, None)
            if device is not None:
                if name == "relay":
                    device.off()
                device.close()

    @property
    def relay_on(self) -> bool:
        """True while the strike is energised (door open)."""
        return bool(self.relay.value)

    def unlock(self) -> None:
        """Energise the strike; if the GPIO fails, try to de-energise it and raise :class:`HardwareError`."""
        try:
            self.relay.on()
        except Exception as error:
            self.lock()
            raise HardwareError(f"relay on GPIO {self.pins.relay_pin} could not be switched on ({error}); the door stays locked") from error

    def lock(self) -> None:
        """De-energise the strike (the fail-secure state).

        If even that fails, the error propagates: the service then exits and
        systemd's ``ExecStopPost=kiosk relay-off`` tries again from a fresh process.
        """
        self.relay.off()

    def show(self, pattern: Led) -> None:
        """Switch the LED to ``pattern`` (no-op when it already shows it)."""
        if pattern is self.pattern:
            return
        self.pattern = pattern
        blink = LED_PATTERNS[pattern]
        if blink is None:
            self.led.on()
        else:
            on_time, off_time, count = blink
            self.led.blink(on_time=on_time, off_time=off_time, n=count, background=True)

    @property
    def button_pressed(self) -> bool:
        return bool(self.button.is_pressed)

    def close(self) -> None:
        """Relay off first, then release every pin."""
        try:
            self.relay.off()
        finally:
            for device in (self.relay, self.led, self.button):
                device.close()
