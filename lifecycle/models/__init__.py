"""All tables of Lifecycle; importing this module registers them on ``Base.metadata``."""

from lifecycle.models.base import Base, UTCDateTime
from lifecycle.models.customers import Customer, Order, OrderStatus
from lifecycle.models.feedback import NpsVote
from lifecycle.models.instance import InstanceSecret
from lifecycle.models.journeys import (
                                       ConfigSnapshot,
                                       EnrollmentStatus,
                                       FlowEnrollment,
                                       FlowStatusChange,
                                       SegmentCalibration,
                                       SegmentMembership,
                                       TriggerCursor,
)
from lifecycle.models.messages import Message, MessageContent, MessageStatus, ProviderEvent
from lifecycle.models.products import CoPurchase, CustomerSuggestion, Product
from lifecycle.models.staff import ApiKey, LoginThrottle, ProcessHeartbeat, StaffRole, StaffUser
from lifecycle.models.touchpoints import Suppression, SuppressionReason, Touchpoint, email_hash

# isort: split
# Last: the offers and campaigns packages keep their tables beside their code, on the same Base.
from lifecycle.campaigns.model import Campaign, CampaignChange, CampaignMember, CampaignStatus
from lifecycle.offers.model import OfferCode, OfferWebhook
from lifecycle.predictions.models import CustomerPrediction, PredictionFit

__all__ = [
    "ApiKey", "Base", "Campaign", "CampaignChange", "CampaignMember", "CampaignStatus",
    "CoPurchase", "ConfigSnapshot", "Customer", "CustomerPrediction", "CustomerSuggestion",
    "EnrollmentStatus",
    "FlowEnrollment", "FlowStatusChange", "InstanceSecret",
    "LoginThrottle", "Message", "OfferCode", "OfferWebhook",
    "MessageContent", "MessageStatus", "NpsVote", "Order", "OrderStatus", "PredictionFit",
    "ProcessHeartbeat",
    "Product",
    "ProviderEvent", "SegmentCalibration",
    "SegmentMembership", "StaffRole", "StaffUser", "Suppression", "SuppressionReason",
    "Touchpoint", "TriggerCursor", "UTCDateTime", "email_hash",
]
